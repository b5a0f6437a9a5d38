// The rule each agent enforces itself, whatever the coordinator asks (SecAgg+): for any one owner, reveal either its
// self-mask seed's share (it survived: its self mask must come off the sum) or its mask key's share (it dropped: its
// pairwise masks must come off), never both — both would let the coordinator unmask that owner's own vector.
import { ErrorCode, GramfuseError } from '../errors.js';

export type ShareKind = 'self-mask' | 'mask-key';

export class ShareGuard {
  private readonly revealed = new Map<string, ShareKind>();

  constructor(
    readonly job: string,
    initial: Readonly<Record<string, ShareKind>> = {},
  ) {
    for (const [owner, kind] of Object.entries(initial)) this.revealed.set(owner, kind);
  }

  /** Records that `kind` of `owner`'s shares is revealed; SECURE_AGGREGATION when the other kind already was. */
  reveal(owner: string, kind: ShareKind): void {
    const before = this.revealed.get(owner);
    if (before !== undefined && before !== kind)
      throw new GramfuseError(
        ErrorCode.SecureAggregation,
        `job ${this.job}: refusing to reveal ${owner}'s ${kind} share: its ${before} share was revealed already, and both would unmask ${owner}'s own statistics`,
        { facts: { job: this.job, owner, asked: kind, revealed: before } },
      );
    this.revealed.set(owner, kind);
  }

  /** What to persist (an agent restarted mid-round must keep refusing). */
  toJSON(): Record<string, ShareKind> {
    return Object.fromEntries(this.revealed);
  }
}
