import { describe, expect, it } from 'vitest';

import { ErrorCode, type GramfuseError } from '../../../shared/index.js';
import { parseStatisticId, StatisticIds, statisticFile } from '../../../shared/federation/index.js';

describe('statistic ids', () => {
  it('each builder parses back to what it names, names with / and :: included', () => {
    expect(parseStatisticId(StatisticIds.gram('g0'))).toEqual({ kind: 'gram', group: 'g0' });
    expect(parseStatisticId(StatisticIds.gramTimesWeight('enc/layer.0::W'))).toEqual({
      kind: 'gram_times_weight',
      weight: 'enc/layer.0::W',
    });
    expect(parseStatisticId(StatisticIds.parameter('a/b'))).toEqual({ kind: 'parameter', parameter: 'a/b' });
    expect(parseStatisticId(StatisticIds.rows('g/1'))).toEqual({ kind: 'rows', group: 'g/1' });
    expect(parseStatisticId(StatisticIds.count('weight'))).toEqual({ kind: 'count', count: 'weight' });
    expect(StatisticIds.gram('g0')).toBe('gram/g0');
    expect(StatisticIds.rows('g0')).toBe('count/rows/g0');
  });

  it('an id of no known kind is INVALID_DATA naming it', () => {
    for (const bad of ['gram/', 'grams/g0', 'count/rows/', 'count/bytes', 'parameter', '']) {
      let caught: GramfuseError | undefined;
      try {
        parseStatisticId(bad);
      } catch (error) {
        caught = error as GramfuseError;
      }
      expect(caught?.code, bad).toBe(ErrorCode.InvalidData);
      expect(caught?.message).toContain(JSON.stringify(bad));
    }
  });

  it('file names are 32 hex digits and differ per id', () => {
    expect(statisticFile('gram/g0')).toMatch(/^[0-9a-f]{32}$/);
    expect(statisticFile('gram/g0')).not.toBe(statisticFile('gram/g1'));
  });
});
