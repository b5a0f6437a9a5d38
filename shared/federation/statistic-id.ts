// Statistic ids, built and parsed in one place: the disclosure plan, bundles, the coordinator's store and the
// merge pipeline all name a statistic the same way. The ids are part of the protocol (DESIGN.md §3), so their
// spelling never changes: gram/<group>, gram_times_weight/<weight>, diag_times_weight/<weight>, parameter/<name>,
// count/<what>.
import { createHash } from 'node:crypto';

import { ErrorCode, GramfuseError } from '../errors.js';

/** The counts every owner sends: examples, real tokens, its weight in the average. */
export type CountName = 'examples' | 'tokens' | 'weight';

/** A statistic's id; the template types make a misspelled kind a compile error. */
export type StatisticId =
  | `gram/${string}`
  | `gram_times_weight/${string}`
  | `diag_times_weight/${string}`
  | `parameter/${string}`
  | `count/rows/${string}`
  | `count/${CountName}`;

/** What an id names, parsed. */
export type ParsedStatisticId =
  | { readonly kind: 'gram'; readonly group: string }
  | { readonly kind: 'gram_times_weight'; readonly weight: string }
  /** diag(G)·B of a weight: sent beside G·B when α is chosen after the statistics (DESIGN.md §3). */
  | { readonly kind: 'diag_times_weight'; readonly weight: string }
  | { readonly kind: 'parameter'; readonly parameter: string }
  | { readonly kind: 'rows'; readonly group: string }
  | { readonly kind: 'count'; readonly count: CountName };

export const StatisticIds = {
  gram: (group: string): StatisticId => `gram/${group}`,
  gramTimesWeight: (weight: string): StatisticId => `gram_times_weight/${weight}`,
  diagTimesWeight: (weight: string): StatisticId => `diag_times_weight/${weight}`,
  parameter: (name: string): StatisticId => `parameter/${name}`,
  rows: (group: string): StatisticId => `count/rows/${group}`,
  count: (what: CountName): StatisticId => `count/${what}`,
} as const;

const COUNTS: readonly string[] = ['examples', 'tokens', 'weight'];

/** Parses an id; throws INVALID_DATA naming it when it is none of the kinds above. */
export function parseStatisticId(id: string): ParsedStatisticId {
  const slash = id.indexOf('/');
  const head = slash < 0 ? id : id.slice(0, slash);
  const rest = slash < 0 ? '' : id.slice(slash + 1);
  if (rest !== '') {
    if (head === 'gram') return { kind: 'gram', group: rest };
    if (head === 'gram_times_weight') return { kind: 'gram_times_weight', weight: rest };
    if (head === 'diag_times_weight') return { kind: 'diag_times_weight', weight: rest };
    if (head === 'parameter') return { kind: 'parameter', parameter: rest };
    if (head === 'count' && rest.startsWith('rows/') && rest.length > 'rows/'.length) return { kind: 'rows', group: rest.slice(5) };
    if (head === 'count' && COUNTS.includes(rest)) return { kind: 'count', count: rest as CountName };
  }
  throw new GramfuseError(
    ErrorCode.InvalidData,
    `statistic id ${JSON.stringify(id)}: not one of gram/<group>, gram_times_weight/<weight>, diag_times_weight/<weight>, parameter/<name>, count/rows/<group>, count/examples|tokens|weight`,
    { facts: { statistic: id } },
  );
}

/** A file-system-safe name for a statistic id (ids contain '/' and '::'): 32 hex digits of its SHA-256. */
export function statisticFile(id: string): string {
  return createHash('sha256').update(id).digest('hex').slice(0, 32);
}
