import { describe, expect, it } from 'vitest';

import { parseSpecText } from '../../../cli/index.js';
import { ErrorCode, GramfuseError } from '../../../shared/index.js';
import { parseJobSpec, secureThreshold } from '../../../shared/federation/index.js';

describe('job spec', () => {
  it('fills every default', () => {
    const spec = parseJobSpec({ id: 'j1', participants: ['org-a', 'org-b'] }, 'spec');
    expect(spec.merge).toMatchObject({ method: 'regmean', alpha: 0.9, weighting: 'equal', includePadding: false });
    expect(spec.policy.minRowsPerGroup).toBe(256);
    expect(spec.limits.maxChunkBytes).toBe(4 * 1024 * 1024);
    expect(spec.quorum).toBeUndefined();
  });

  it('reports every problem at once, each with its dot path', () => {
    let error: unknown;
    try {
      parseJobSpec({ id: 'Bad Id', participants: ['a'], quorum: 3, merge: { alpha: 1.5, colour: 'red' }, surprise: true }, 'job.yaml');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(GramfuseError);
    expect((error as GramfuseError).code).toBe(ErrorCode.InvalidArgument);
    const message = (error as GramfuseError).message;
    expect(message).toMatch(/^job\.yaml: invalid job spec: /);
    expect(message).toMatch(/id: lowercase letters/);
    expect(message).toMatch(/merge\.alpha: /);
    expect(message).toMatch(/merge: Unrecognized key: "colour"/);
    expect(message).toMatch(/\(root\): Unrecognized key: "surprise"|: Unrecognized key: "surprise"/);
  });

  it('takes a collection deadline as an ISO 8601 time, and names the field when it is not one', () => {
    expect(parseJobSpec({ id: 'j4', participants: ['a'], deadlines: { collect: '2026-12-01T12:00:00Z' } }, 'spec').deadlines.collect).toBe(
      '2026-12-01T12:00:00Z',
    );
    expect(parseJobSpec({ id: 'j4', participants: ['a'] }, 'spec').deadlines).toEqual({});
    expect(() => parseJobSpec({ id: 'j4', participants: ['a'], deadlines: { collect: 'next tuesday' } }, 'spec')).toThrow(
      /deadlines\.collect: /,
    );
  });

  it('YAML and JSON spec files read the same; bad syntax names the file', () => {
    const yaml = parseSpecText('id: j2\nparticipants: [org-a, org-b]\nmerge:\n  alpha: 0.5\n', 'job.yaml');
    const json = parseSpecText('{"id": "j2", "participants": ["org-a", "org-b"], "merge": {"alpha": 0.5}}', 'job.json');
    expect(yaml).toEqual(json);
    expect(() => parseSpecText('id: [unclosed', 'job.yml')).toThrow(/job\.yml: not valid YAML/);
  });

  it('refuses methods that do not federate yet', () => {
    expect(() => parseJobSpec({ id: 'j3', participants: ['a'], merge: { method: 'ties' } }, 'spec')).toThrow(
      /merge\.method: federated jobs support regmean and average/,
    );
  });

  it('refuses α chosen after upload (local mode only so far) instead of failing at the solve', () => {
    expect(() => parseJobSpec({ id: 'j4', participants: ['a'], merge: { alphaCandidates: [0.5, 0.9] } }, 'spec')).toThrow(
      /merge\.alphaCandidates: α chosen after upload is not federated yet/,
    );
  });

  it('privacy: off by default; secure aggregation needs n ≥ 3, n/2 < t ≤ n, minOwners ≤ n and no quorum', () => {
    const plain = parseJobSpec({ id: 'p', participants: ['a', 'b'] }, 'spec');
    expect(plain.privacy).toEqual({ secureAggregation: false, minOwners: 3, roundTimeoutSeconds: 60 });
    const secure = parseJobSpec({ id: 's', participants: ['a', 'b', 'c', 'd', 'e'], privacy: { secureAggregation: true } }, 'spec');
    // 2t > n + k with k = 1 colluder by default: t = 4 of 5 (t = 3 would fall to one colluder and dropout lies).
    expect(secureThreshold(secure)).toBe(4);
    expect(secureThreshold({ ...secure, privacy: { ...secure.privacy, colluders: 0 } })).toBe(3);
    expect(secureThreshold({ participants: ['a', 'b', 'c'], privacy: secure.privacy })).toBe(3);
    const problems = (
      privacy: Record<string, unknown>,
      participants = ['a', 'b', 'c', 'd'],
      extra: Record<string, unknown> = {},
    ): string => {
      try {
        parseJobSpec({ id: 's', participants, privacy: { secureAggregation: true, ...privacy }, ...extra }, 'job.yaml');
      } catch (error) {
        expect((error as GramfuseError).code).toBe(ErrorCode.InvalidArgument);
        return (error as GramfuseError).message;
      }
      return '';
    };
    expect(problems({}, ['a', 'b'])).toMatch(/participants: secure aggregation needs at least 3 participants \(got 2\)/);
    expect(problems({ threshold: 2 })).toMatch(
      /privacy\.threshold: the threshold t must satisfy n\/2 < t ≤ n for n = 4 participants \(got 2\)/,
    );
    expect(problems({ threshold: 5 })).toMatch(/privacy\.threshold: /);
    expect(problems({ minOwners: 5 })).toMatch(/privacy\.minOwners: minOwners 5 exceeds the 4 participants/);
    expect(problems({}, ['a', 'b', 'c', 'd'], { quorum: 3 })).toMatch(
      /quorum: with secure aggregation the survivors needed are privacy\.minOwners/,
    );
    expect(problems({ threshold: 3, minOwners: 4 })).toBe('');
    expect(problems({ threshold: 3, colluders: 2 })).toMatch(
      /privacy\.threshold: t = 3 does not withstand 2 colluding owners at n = 4: it needs 2t > n \+ k, t ≥ 4/,
    );
    const many = Array.from({ length: 256 }, (_, i) => `o${i}`);
    expect(problems({}, many)).toMatch(/participants: secure aggregation takes at most 255 participants \(got 256\)/);
  });
});
