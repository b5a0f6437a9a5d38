// The contract every coordinator state store keeps (test/unit/statistic-store.contract.ts checks it). Entries are
// named by path parts (`['jobs', id, 'owners', owner, 'receipts.jsonl']`); what is durable when is stated per call.

/**
 * Where the coordinator keeps its durable state: job specs and states, owners' manifests, uploaded chunks being
 * assembled, committed statistics, receipt logs, solve work and results (DESIGN.md §5).
 *
 * The solve worker and the model writer open entries by {@link StatisticStore.path}, so a store must be reachable
 * as local files on the coordinator's machine (a mounted volume is fine). {@link FileStore} is the one
 * implementation today.
 */
export interface StatisticStore {
  /** The directory the store lives under (the solve worker opens it again in its own thread). */
  readonly root: string;
  /** The local path of an entry, for code that writes through other means (saveModel, the merge pipeline). */
  path(...parts: string[]): string;
  /**
   * Replaces an entry atomically: a reader sees the old or the new bytes, never a mix.
   * @param sync fsync the entry (and its directory) before returning. @default true. `false` is for data whose
   *   commit point is a later synced record, e.g. statistics before their receipt.
   */
  write(parts: string[], data: Uint8Array | string, sync?: boolean): Promise<void>;
  /**
   * Writes an entry in place (created or replaced), neither atomically nor synced: only for bytes whose digest is
   * checked again before anything uses them after a crash (a verified statistic before its group commit).
   */
  writeChecked(parts: string[], data: Uint8Array): Promise<void>;
  /** Writes bytes at an offset of an entry, created when missing; not synced (chunks of a statistic being assembled). */
  writeAt(parts: string[], offset: number, data: Uint8Array): Promise<void>;
  /** Appends whole lines (a newline after each); with `sync`, durable when the promise resolves (a commit point). */
  appendLines(parts: string[], lines: readonly string[], sync: boolean): Promise<void>;
  /** Makes entries written or renamed earlier without sync durable, with their directories: a group commit. */
  sync(paths: readonly string[][]): Promise<void>;
  /** Moves an entry to another name (replacing what is there), creating the target's directory. */
  rename(from: string[], to: string[]): Promise<void>;
  /** Exactly `length` bytes from `offset`; an entry shorter than that is INVALID_DATA. */
  readRange(parts: string[], offset: number, length: number): Promise<Uint8Array>;
  /** SHA-256 (hex) and size of an entry. */
  sha256(parts: string[]): Promise<{ sha256: string; bytes: number }>;
  /** Creates a directory entry (and its parents), for files written through {@link StatisticStore.path}. */
  directory(parts: string[]): Promise<void>;
  /** An entry's bytes, or `undefined` when there is none. */
  read(parts: string[]): Promise<Buffer | undefined>;
  /** An entry parsed as JSON, or `undefined` when there is none; bytes that are not JSON are STATE_CORRUPT. */
  readJson<T>(parts: string[]): Promise<T | undefined>;
  /** The names under a directory entry (none when it does not exist), leaving out unfinished atomic writes. */
  list(parts: string[]): Promise<string[]>;
  /** Removes an entry and everything under it; removing what is not there is not an error. */
  remove(parts: string[]): Promise<void>;
}
