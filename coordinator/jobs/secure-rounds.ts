// Secure aggregation on the coordinator (issue #18, DESIGN §8): the SecAgg+ rounds of a job whose spec says
// privacy.secureAggregation. The coordinator relays public keys (with the certificates it saw), bounds and sealed
// shares it cannot open; it stores each owner's masked statistics like any upload, and once the survivors' shares
// come back it removes the masks from their sum and writes only the sum (jobs/<id>/secure/sum/). No owner's own
// statistics are ever in the clear here.
//
// Rounds: advertising (U₁: keys + bounds) → sharing (U₂: sealed shares) → uploading (survivors: every masked
// statistic committed) → confirming (the survivors sign the unmasking request they were shown) → unmasking (each
// checks that ≥ t survivors signed the same request, then reveals; ≥ t reveals are needed) → summed (the solve starts). A round closes as soon
// as every owner it waits for has answered, or — with at least max(t, minOwners) answers — roundTimeoutSeconds after
// its first answer; the others count as dropped from then on. The state is one JSON file, written atomically at each
// change, so a restarted coordinator goes on where it stopped.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { ErrorCode, failpoint, faultInjected, GramfuseError, toGramfuseError } from '../../shared/index.js';
import { secureThreshold, statisticFile } from '../../shared/federation/index.js';
import { planDisclosure, type PlannedStatistic } from '../../shared/merge/index.js';
import {
  type AdvertiseBody,
  agreedSecret,
  type ConfirmBody,
  pairSign,
  reconstructChecked,
  type RevealBody,
  ringAddInto,
  type RoundView,
  type SecurePhase,
  seedCommitment,
  signAdvertisement,
  signUnmaskRequest,
  type ShareBody,
  statisticScale,
  unmaskSlice,
  verifyAdvertisement,
  verifyUnmaskRequest,
  keySetOf,
} from '../../shared/secure-aggregation/index.js';
import { certificateName } from '../../shared/security/index.js';
import type { JobContext } from './context.js';
import type { Job } from './job.js';

/** The owner name the unmasked sum goes by in the solve (never a participant: identities cannot contain a space). */
export const SECURE_SUM_OWNER = 'Σ secure aggregation';

interface Advertisement {
  readonly maskPublicKey: string;
  readonly encryptionPublicKey: string;
  /** H(bᵢ), signed with the keys: a self-mask seed rebuilt from shares must hash to it. */
  readonly selfSeedCommitment: string;
  readonly signature: string;
  readonly certificatePem: string;
  readonly bounds: Readonly<Record<string, number>>;
}

/** jobs/<id>/secure/state.json */
export interface SecureState {
  phase: SecurePhase;
  /** When the current round's first answer came: its timeout counts from there. */
  firstAnswerAt?: string;
  advertisements: Record<string, Advertisement>;
  /** U₁, sorted, and the common scale (from phase sharing on). */
  members?: string[];
  scale?: { owners: number; bounds: Record<string, number> };
  /** from → to → sealed share (base64). */
  shares: Record<string, Record<string, string>>;
  /** U₂, sorted (from phase uploading on). */
  sharers?: string[];
  unmask?: { survivors: string[]; dropped: string[] };
  /** survivor → its signature over the unmasking request it was shown (the consistency round). */
  confirmations?: Record<string, string>;
  /** responder → its revealed shares. */
  reveals: Record<string, RevealBody['shares']>;
  /** The unmasked sums, as the solve reads them (phase summed). */
  summed?: { owners: string[]; statistics: PlannedStatistic[] };
}

const SLICE = 1 << 20;

export class SecureRounds {
  private readonly states = new Map<string, SecureState>();
  private readonly queues = new Map<string, Promise<unknown>>();
  private readonly timers = new Map<string, NodeJS.Timeout>();

  constructor(
    private readonly ctx: JobContext,
    private readonly jobOf: (id: string) => Job,
  ) {}

  /** The job's state (a fresh one for a job that has none yet). */
  private state(job: Job): SecureState {
    const id = job.spec.id;
    let state = this.states.get(id);
    if (state === undefined) this.states.set(id, (state = { phase: 'advertising', advertisements: {}, shares: {}, reveals: {} }));
    return state;
  }

  /** Reads a secure job's rounds back after a restart and re-arms their timeouts. */
  async load(job: Job): Promise<void> {
    const saved = await this.ctx.store.readJson<SecureState>(['jobs', job.spec.id, 'secure', 'state.json']);
    if (saved !== undefined) this.states.set(job.spec.id, saved);
    if (job.persisted.state !== 'open' && job.persisted.state !== 'collecting') return;
    // Summed before a stop that came before the solve started: start it now.
    if (saved?.phase === 'summed') void this.ctx.solve(job.spec.id);
    else await this.advance(job.spec.id);
  }

  /** The unmasked sums the solve reads, once summed. */
  summed(jobId: string): SecureState['summed'] {
    return this.states.get(jobId)?.summed;
  }

  /** Serializes the work on one job's rounds (answers and timeouts arrive concurrently). */
  private exclusive<T>(jobId: string, work: () => Promise<T>): Promise<T> {
    const previous = this.queues.get(jobId) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(work);
    this.queues.set(jobId, next);
    return next;
  }

  private async save(jobId: string, state: SecureState): Promise<void> {
    await this.ctx.store.write(['jobs', jobId, 'secure', 'state.json'], JSON.stringify(state));
  }

  private refuse(jobId: string, message: string, code: ErrorCode = ErrorCode.SecureAggregation): never {
    throw new GramfuseError(code, `job ${jobId}: ${message}`, { facts: { job: jobId } });
  }

  private secureJob(jobId: string): Job {
    const job = this.jobOf(jobId);
    if (!job.spec.privacy.secureAggregation)
      this.refuse(jobId, 'this job does not use secure aggregation (privacy.secureAggregation is false)', ErrorCode.InvalidArgument);
    return job;
  }

  /** New answers are taken while the job collects; a repeated one (a retry whose reply was lost) is answered always. */
  private open(job: Job): void {
    if (job.persisted.state !== 'open' && job.persisted.state !== 'collecting')
      this.refuse(job.spec.id, `the job is ${job.persisted.state}; its secure rounds are over`, ErrorCode.JobClosed);
  }

  /**
   * One owner's answer in a round, the same way for every round: a repeated answer (a retry whose reply was lost) is
   * answered from the saved state whatever the job's state; a new one is taken while the job collects, checked and
   * recorded by `take` (which throws to refuse it), saved (then `taken` runs: announcements of what is durable), and may
   * close the round.
   */
  private answer(
    identity: string,
    jobId: string,
    answered: (state: SecureState) => boolean,
    take: (job: Job, state: SecureState) => void,
    taken: () => void = () => undefined,
  ): Promise<RoundView> {
    return this.exclusive(jobId, async () => {
      const job = this.secureJob(jobId);
      const state = this.state(job);
      if (answered(state)) return this.view(identity, job);
      this.open(job);
      take(job, state);
      await this.save(jobId, state);
      taken();
      await this.step(job, state);
      return this.view(identity, job);
    });
  }

  /** Round 0: an owner's keys (checked against the certificate it connected with) and its bounds. */
  advertise(identity: string, jobId: string, body: AdvertiseBody, certificatePem: string | undefined): Promise<RoundView> {
    const answered = (state: SecureState): boolean => {
      const before = state.advertisements[identity];
      if (before !== undefined && (before.maskPublicKey !== body.maskPublicKey || before.encryptionPublicKey !== body.encryptionPublicKey))
        this.refuse(jobId, `${identity} advertised other keys before; an owner's round-0 keys cannot change (its masks depend on them)`);
      return before !== undefined;
    };
    return this.answer(
      identity,
      jobId,
      answered,
      (job, state) => {
        if (certificatePem === undefined)
          this.refuse(jobId, 'secure aggregation needs mTLS: each owner signs its keys with its certificate (insecure loopback has none)');
        if (state.phase !== 'advertising')
          this.refuse(jobId, `round 0 (key advertisement) is closed: ${identity} came too late and is not in this secure sum`);
        verifyAdvertisement({ job: jobId, owner: identity, ...body }, certificatePem);
        const expected = planDisclosure(identity, job.analysis, job.spec.merge, 'float64', job.spec.policy).statistics.map((s) => s.id);
        const missing = expected.filter((id) => body.bounds[id] === undefined);
        const extra = Object.keys(body.bounds).filter((id) => !expected.includes(id));
        if (missing.length > 0 || extra.length > 0)
          this.refuse(
            jobId,
            `${identity}'s bounds must name every statistic of the template once (${missing.length} missing, e.g. ${missing[0] ?? '-'}; ${extra.length} unknown, e.g. ${extra[0] ?? '-'})`,
            ErrorCode.InvalidArgument,
          );
        state.advertisements[identity] = {
          maskPublicKey: body.maskPublicKey,
          encryptionPublicKey: body.encryptionPublicKey,
          selfSeedCommitment: body.selfSeedCommitment,
          signature: body.signature,
          certificatePem,
          bounds: body.bounds,
        };
      },
      () => this.ctx.emit(jobId, 'joined', { owner: identity, secure: 'advertised' }),
    );
  }

  /** Round 1: the owner's sealed shares, one for each member of U₁. */
  share(identity: string, jobId: string, body: ShareBody): Promise<RoundView> {
    return this.answer(
      identity,
      jobId,
      (state) => state.shares[identity] !== undefined,
      (_job, state) => {
        if (state.phase !== 'sharing' || !(state.members ?? []).includes(identity))
          this.refuse(
            jobId,
            state.phase === 'advertising'
              ? 'shares are taken once round 0 has closed; ask Round again'
              : `${identity} is not sharing in this round (phase ${state.phase})`,
          );
        const members = state.members!;
        const to = body.shares.map((s) => s.to).sort();
        if (to.length !== members.length || to.some((o, i) => o !== members[i]))
          this.refuse(jobId, `${identity} must send one sealed share to each of ${members.join(', ')}`, ErrorCode.InvalidArgument);
        state.shares[identity] = Object.fromEntries(body.shares.map((s) => [s.to, s.sealed]));
      },
    );
  }

  /** The consistency round: a survivor's signature over the unmasking request it was shown. */
  confirm(identity: string, jobId: string, body: ConfirmBody): Promise<RoundView> {
    return this.answer(
      identity,
      jobId,
      (state) => state.confirmations?.[identity] !== undefined,
      (_job, state) => {
        const request = this.shown(identity, state);
        if (
          state.phase !== 'confirming' ||
          request === undefined ||
          (!request.survivors.includes(identity) && !(faultInjected('secure.late-threshold') && (state.sharers ?? []).includes(identity)))
        )
          this.refuse(jobId, `no unmasking request is open for ${identity} to confirm (phase ${state.phase})`);
        if (
          !verifyUnmaskRequest(
            jobId,
            { ...request, keySet: this.keySet(state) },
            body.signature,
            state.advertisements[identity]!.certificatePem,
          )
        )
          this.refuse(
            jobId,
            `${identity}'s confirmation does not verify with its certificate over the request it was shown`,
            ErrorCode.InvalidArgument,
          );
        // Fault injection (tests) `secure.resign`: the first sharer's confirmation is dropped and the request changed (the
        // last sharer now "dropped"), as a coordinator would that wants a second signature from a restarted owner.
        if (faultInjected('secure.resign') && identity === state.sharers?.[0] && state.unmask!.dropped.length === 0) {
          const last = state.sharers[state.sharers.length - 1]!;
          state.unmask = { survivors: state.unmask!.survivors.filter((o) => o !== last), dropped: [last] };
          state.confirmations = {};
          return;
        }
        state.confirmations = { ...state.confirmations, [identity]: body.signature };
      },
    );
  }

  /**
   * The unmasking request `identity` is shown. Fault injection (tests): `secure.split-view` shows the first survivor
   * another request (the last survivor moved to the dropped), as a coordinator would that tries to get one owner's
   * self-mask and mask-key shares from two groups of owners; the consistency round must stop it.
   */
  private shown(identity: string, state: SecureState): SecureState['unmask'] {
    const unmask = state.unmask;
    const split = this.splitCollude(state);
    if (split !== undefined && identity === split.honest) return split.other;
    if (unmask === undefined || identity !== unmask.survivors[0] || !faultInjected('secure.split-view')) return unmask;
    const moved = unmask.survivors[unmask.survivors.length - 1]!;
    return { survivors: unmask.survivors.filter((o) => o !== moved), dropped: [...unmask.dropped, moved] };
  }

  /** Unmasking: a survivor's shares of what the coordinator asked for, exactly that. */
  reveal(identity: string, jobId: string, body: RevealBody): Promise<RoundView> {
    return this.answer(
      identity,
      jobId,
      (state) => state.reveals[identity] !== undefined,
      (_job, state) => {
        // Fault injection (tests): the attacking coordinators take whatever any sharer reveals.
        if (state.phase === 'unmasking' && (faultInjected('secure.late-threshold') || faultInjected('secure.split-collude'))) {
          state.reveals[identity] = body.shares;
          return;
        }
        const unmask = state.unmask;
        if (state.phase !== 'unmasking' || unmask === undefined || !unmask.survivors.includes(identity))
          this.refuse(jobId, `no unmasking request is open for ${identity} (phase ${state.phase})`);
        const asked = new Set([...unmask.survivors.map((o) => `${o}/self-mask`), ...unmask.dropped.map((o) => `${o}/mask-key`)]);
        // A share that did not open at the caller (garbage from its sender or the relay) is declared, not revealed.
        const unopened = new Set(body.unopened ?? []);
        const given = body.shares.map((s) => `${s.owner}/${s.kind}`);
        const expected = [...asked].filter((a) => !unopened.has(a.slice(0, a.lastIndexOf('/'))));
        if (
          given.length !== expected.length ||
          new Set(given).size !== given.length ||
          given.some((g) => !expected.includes(g)) ||
          [...unopened].some((o) => !asked.has(`${o}/self-mask`) && !asked.has(`${o}/mask-key`))
        )
          this.refuse(jobId, `${identity} must reveal exactly the shares asked for (${[...asked].join(', ')})`, ErrorCode.InvalidArgument);
        // Every share an owner holds has its own Shamir x: its place among the round's members (round 1 dealt them so).
        const x = (state.members ?? []).indexOf(identity) + 1;
        if (body.shares.some((s) => s.x !== x))
          this.refuse(
            jobId,
            `${identity}'s shares are dealt at x = ${x}; a share revealed at another x is refused`,
            ErrorCode.InvalidArgument,
          );
        state.reveals[identity] = body.shares;
      },
    );
  }

  /** An owner completed its upload (commit.ts): the upload round may close. */
  ownerCompleted(jobId: string): Promise<void> {
    return this.advance(jobId);
  }

  /** Refuses a join from an owner that is not uploading in this round (a masked vector outside U₂ could never be unmasked). */
  checkUpload(identity: string, jobId: string, completed: boolean): void {
    const state = this.states.get(jobId);
    const sharer = (state?.sharers ?? []).includes(identity);
    // An owner that completed may join again (a restarted agent collecting its receipts) while the sum is being unmasked.
    const later = state?.phase === 'confirming' || state?.phase === 'unmasking' || state?.phase === 'summed';
    if (!sharer || !(state?.phase === 'uploading' || (later && completed)))
      this.refuse(
        jobId,
        state?.phase === 'advertising' || state?.phase === 'sharing' || state === undefined
          ? `${identity} may upload once the key rounds have closed (phase ${state?.phase ?? 'advertising'})`
          : `${identity} is not among the owners whose masks this round can remove (phase ${state.phase}); its statistics cannot enter this secure sum`,
      );
  }

  /** Re-checks the job's current round (a timeout, a completion, a restart). */
  advance(jobId: string): Promise<void> {
    return this.exclusive(jobId, async () => {
      const job = this.jobOf(jobId);
      if (job.persisted.state !== 'open' && job.persisted.state !== 'collecting') return;
      await this.step(job, this.state(job));
    }).catch(async (error: unknown) => this.ctx.fail(jobId, toGramfuseError(error)));
  }

  /** Closes the current round when it may close (repeatedly: one close can make the next round closable). */
  private async step(job: Job, state: SecureState): Promise<void> {
    const jobId = job.spec.id;
    const t = secureThreshold(job.spec);
    const needed = Math.max(t, job.spec.privacy.minOwners);
    for (;;) {
      // Fault injection (tests): the late-threshold coordinator unmasks with t = 1; the split view waits for every sharer.
      const lateT = faultInjected('secure.late-threshold') && (state.phase === 'confirming' || state.phase === 'unmasking') ? 1 : t;
      let [waitingFor, answered] = this.waiting(job, state);
      if (state.phase === 'summed') return;
      if (state.phase === 'confirming' && this.splitCollude(state) !== undefined) {
        waitingFor = state.sharers ?? [];
        answered = Object.keys(state.confirmations ?? {}).sort();
      }
      // The round's clock starts at its first answer (an upload's completion is one too).
      if (answered.length > 0 && state.firstAnswerAt === undefined) {
        state.firstAnswerAt = new Date().toISOString();
        await this.save(jobId, state);
      }
      const all = waitingFor.every((o) => answered.includes(o));
      // Confirmations and reveals come from survivors only: t of them suffice (the sum's owners were fixed before).
      const enough = state.phase === 'unmasking' || state.phase === 'confirming' ? answered.length >= lateT : answered.length >= needed;
      const first = state.firstAnswerAt === undefined ? undefined : Date.parse(state.firstAnswerAt);
      const due = first === undefined ? Number.POSITIVE_INFINITY : first + job.spec.privacy.roundTimeoutSeconds * 1000;
      const timedOut = Date.now() >= due;
      if (!(all && answered.length > 0 && enough) && !(timedOut && enough)) {
        if (Number.isFinite(due)) this.arm(jobId, due);
        return;
      }
      try {
        await this.close(job, state, answered);
      } catch (error) {
        // A round that cannot close (a bound past Z/2⁶⁴, a share that does not reconstruct, a full disk) fails the
        // job with its coded reason, instead of failing only the call that happened to close it.
        await this.ctx.fail(jobId, toGramfuseError(error));
        return;
      }
    }
  }

  /** Who the current round waits for, and who has answered. */
  private waiting(job: Job, state: SecureState): [string[], string[]] {
    switch (state.phase) {
      case 'advertising':
        return [[...job.spec.participants], Object.keys(state.advertisements).sort()];
      case 'sharing':
        return [state.members ?? [], Object.keys(state.shares).sort()];
      case 'uploading':
        return [state.sharers ?? [], (state.sharers ?? []).filter((o) => job.persisted.completed.includes(o))];
      case 'confirming':
        return [state.unmask?.survivors ?? [], Object.keys(state.confirmations ?? {}).sort()];
      case 'unmasking':
        return [state.unmask?.survivors ?? [], Object.keys(state.reveals).sort()];
      case 'summed':
        return [[], []];
    }
  }

  private arm(jobId: string, due: number): void {
    clearTimeout(this.timers.get(jobId));
    const timer = setTimeout(() => void this.advance(jobId), Math.max(0, Math.min(due - Date.now() + 10, 2 ** 31 - 1)));
    timer.unref();
    this.timers.set(jobId, timer);
  }

  private async close(job: Job, state: SecureState, answered: string[]): Promise<void> {
    const jobId = job.spec.id;
    delete state.firstAnswerAt;
    clearTimeout(this.timers.get(jobId));
    switch (state.phase) {
      case 'advertising': {
        // Fault injection (tests): a coordinator that adds itself to the round, signing keys with its own TLS server key.
        const members = faultInjected('secure.sybil') ? this.addSybil(job, state, answered) : answered;
        state.members = members;
        const bounds: Record<string, number> = {};
        for (const owner of members)
          for (const [id, b] of Object.entries(state.advertisements[owner]!.bounds)) bounds[id] = Math.max(bounds[id] ?? -Infinity, b);
        // Checked now, so a bound too large for Z/2⁶⁴ fails the job at once, naming the statistic.
        for (const [id, b] of Object.entries(bounds)) {
          try {
            statisticScale(b, members.length);
          } catch (error) {
            throw new GramfuseError(ErrorCode.SecureAggregation, `statistic ${id}: ${(error as Error).message}`, {
              facts: { statistic: id },
            });
          }
        }
        state.scale = { owners: members.length, bounds };
        state.phase = 'sharing';
        break;
      }
      case 'sharing':
        state.sharers = answered;
        state.phase = 'uploading';
        break;
      case 'uploading': {
        const survivors = answered;
        const dropped = (state.sharers ?? []).filter((o) => !survivors.includes(o));
        state.unmask = { survivors, dropped };
        // Fault injection (tests): a coordinator that asks for both kinds of share of one owner; every agent must refuse.
        if (faultInjected('secure.ask-both')) state.unmask = { survivors, dropped: [...dropped, survivors[0]!] };
        // Fault injection (tests): honest until the uploads, then t = 1 with the first owner the only survivor: its self-mask
        // seed and everyone else's mask key would unmask its statistics.
        if (faultInjected('secure.late-threshold')) {
          const [victim, ...rest] = state.sharers ?? [];
          state.unmask = { survivors: [victim!], dropped: rest };
        }
        const split = this.splitCollude(state);
        if (split !== undefined) state.unmask = split.shown;
        state.phase = 'confirming';
        break;
      }
      case 'confirming':
        state.phase = 'unmasking';
        break;
      case 'unmasking':
        await this.sum(job, state, answered);
        state.phase = 'summed';
        break;
      case 'summed':
        return;
    }
    await this.save(jobId, state);
    await this.ctx.ledger.append('secure.round', jobId, {
      phase: state.phase,
      answered,
      ...(state.phase === 'sharing' ? { members: state.members, scaleOwners: state.scale!.owners, bounds: state.scale!.bounds } : {}),
      ...(state.phase === 'uploading' ? { sharers: state.sharers } : {}),
      ...(state.phase === 'confirming' ? { survivors: state.unmask!.survivors, dropped: state.unmask!.dropped } : {}),
      ...(state.phase === 'unmasking' ? { confirmedBy: Object.keys(state.confirmations ?? {}).sort() } : {}),
      ...(state.phase === 'summed'
        ? { owners: state.summed!.owners, statistics: state.summed!.statistics.map((s) => ({ id: s.id, sha256: s.sha256 })) }
        : {}),
    });
    this.ctx.log(`job ${jobId}: secure aggregation: ${state.phase} (${answered.length} answered: ${answered.join(', ')})`);
    this.ctx.emit(jobId, 'state', { state: job.persisted.state, secure: state.phase });
    failpoint('secure.closed'); // fault tests: a stop after a round closed (state and ledger written)
    if (state.phase === 'summed') void this.ctx.solve(jobId);
  }

  /** Σ of the survivors' masked statistics, unmasked with the revealed shares, decoded, written under secure/sum/. */
  private async sum(job: Job, state: SecureState, responders: string[]): Promise<void> {
    const jobId = job.spec.id;
    const t = secureThreshold(job.spec);
    const { survivors, dropped } = state.unmask!;
    const sharesOf = (owner: string, kind: 'self-mask' | 'mask-key') =>
      responders.flatMap((r) =>
        (state.reveals[r] ?? [])
          .filter((s) => s.owner === owner && s.kind === kind)
          .map((s) => ({ x: s.x, y: new Uint8Array(Buffer.from(s.y, 'base64')) })),
      );
    // Each secret is rebuilt from t shares that give back what its owner committed to in round 0 (H(bᵢ) for a seed, the
    // advertised public key for a mask key); with more than t shares every other one is checked against it, so one
    // wrong share (a lying owner) is named and left out instead of silently corrupting the sum.
    const inconsistent: { owner: string; kind: string; responders: string[] }[] = [];
    const rebuild = (owner: string, kind: 'self-mask' | 'mask-key', check: (secret: Uint8Array) => boolean): Uint8Array => {
      const shares = sharesOf(owner, kind);
      const found = reconstructChecked(shares, t, check);
      if (found === undefined)
        this.refuse(
          jobId,
          `the ${kind === 'self-mask' ? 'self-mask seed' : 'mask key'} of ${kind === 'self-mask' ? 'survivor' : 'dropped owner'} ${owner} does not reconstruct from the ${shares.length} revealed shares to what it committed to in round 0 (a share was wrong)`,
        );
      if (found.inconsistent.length > 0)
        inconsistent.push({ owner, kind, responders: found.inconsistent.map((x) => (state.members ?? [])[x - 1] ?? `x=${x}`) });
      return found.secret;
    };
    const selfSeeds = survivors.map((o) =>
      rebuild(o, 'self-mask', (seed) => seedCommitment(jobId, o, seed) === state.advertisements[o]!.selfSeedCommitment),
    );
    const droppedPairs: { seed: Uint8Array; sign: 1 | -1 }[] = [];
    const publicOf = (pem: string): string => {
      try {
        return createPublicKey(createPrivateKey(pem)).export({ type: 'spki', format: 'pem' }).toString();
      } catch {
        return '';
      }
    };
    for (const d of dropped) {
      const pem = Buffer.from(
        rebuild(d, 'mask-key', (key) => publicOf(Buffer.from(key).toString('utf8')) === state.advertisements[d]!.maskPublicKey),
      ).toString('utf8');
      for (const s of survivors)
        droppedPairs.push({ seed: agreedSecret(pem, state.advertisements[s]!.maskPublicKey, jobId, 'mask'), sign: pairSign(s, d) });
    }
    if (inconsistent.length > 0) {
      await this.ctx.ledger.append('secure.inconsistent-shares', jobId, { shares: inconsistent });
      this.ctx.log(
        `job ${jobId}: secure aggregation: wrong shares left out: ${inconsistent.map((i) => `${i.owner}'s ${i.kind} from ${i.responders.join(', ')}`).join('; ')}`,
      );
    }
    const owners = state.scale!.owners;
    const statistics: PlannedStatistic[] = [];
    const written: string[][] = [];
    for (const planned of planDisclosure(SECURE_SUM_OWNER, job.analysis, job.spec.merge, 'float64', job.spec.policy).statistics) {
      const entries = planned.shape.reduce((a, b) => a * b, 1);
      const scale = statisticScale(state.scale!.bounds[planned.id]!, owners);
      const file = ['jobs', jobId, 'secure', 'sum', `${statisticFile(planned.id)}.bin`];
      const hash = createHash('sha256');
      // A slice at a time: memory holds one slice of the sum, whatever the statistic's size. The files are synced
      // together below and committed by the state written after them (a stop before that unmasks again, in place).
      for (let start = 0; start < entries; start += SLICE) {
        const length = Math.min(SLICE, entries - start);
        const sum = new BigUint64Array(length);
        for (const owner of survivors) {
          const bytes = await this.ctx.store.readRange(
            ['jobs', jobId, 'owners', owner, 'committed', `${statisticFile(planned.id)}.bin`],
            start * 8,
            length * 8,
          );
          const aligned = bytes.byteOffset % 8 === 0 ? bytes : new Uint8Array(bytes);
          ringAddInto(sum, new BigUint64Array(aligned.buffer, aligned.byteOffset, length));
        }
        const decoded = unmaskSlice(sum, start, scale, { job: jobId, statistic: planned.id, selfSeeds, droppedPairs });
        const bytes = new Uint8Array(decoded.buffer, decoded.byteOffset, decoded.byteLength);
        hash.update(bytes);
        await this.ctx.store.writeAt(file, start * 8, bytes);
      }
      written.push(file);
      statistics.push({ ...planned, dtype: 'float64', bytes: entries * 8, sha256: hash.digest('hex') });
    }
    await this.ctx.store.sync(written);
    state.summed = { owners: survivors, statistics };
  }

  /**
   * Fault injection (tests) `secure.split-collude`: a coordinator colluding with one owner (GRAMFUSE_FAULT_COLLUDER, whose
   * certificate key GRAMFUSE_FAULT_COLLUDER_KEY it holds) shows the victim (the first sharer) and the colluder "the
   * third owner dropped" and shows the third owner "the victim dropped", signing both requests as the colluder: the
   * victim's self-mask seed from one group, its mask key from the other.
   */
  private splitCollude(
    state: SecureState,
  ): { honest: string; shown: { survivors: string[]; dropped: string[] }; other: { survivors: string[]; dropped: string[] } } | undefined {
    const colluder = process.env.GRAMFUSE_FAULT_COLLUDER;
    if (colluder === undefined || !faultInjected('secure.split-collude') || state.sharers === undefined) return undefined;
    const victim = state.sharers[0]!;
    const honest = state.sharers.find((o) => o !== victim && o !== colluder)!;
    const others = state.sharers.filter((o) => o !== victim && o !== honest);
    return {
      honest,
      shown: { survivors: [victim, ...others].sort(), dropped: [honest] },
      other: { survivors: [honest, ...others].sort(), dropped: [victim] },
    };
  }

  /** The key set digest of the round (U₁'s keys, signed bounds and certificates) that agents sign with their confirmation. */
  private keySet(state: SecureState): string {
    return keySetOf((state.members ?? []).map((owner) => ({ owner, ...state.advertisements[owner]! })));
  }

  /** The survivors' confirmations `identity` is shown (the split-collude fault adds the colluder's signature of its view). */
  private confirmationsFor(identity: string, jobId: string, state: SecureState): { owner: string; signature: string }[] {
    const all = Object.entries(state.confirmations ?? {}).map(([owner, signature]) => ({ owner, signature }));
    const split = this.splitCollude(state);
    const colluder = process.env.GRAMFUSE_FAULT_COLLUDER;
    const keyPath = process.env.GRAMFUSE_FAULT_COLLUDER_KEY;
    if (split === undefined || colluder === undefined || keyPath === undefined) return all;
    const request = this.shown(identity, state)!;
    const forged = signUnmaskRequest(jobId, { ...request, keySet: this.keySet(state) }, readFileSync(keyPath, 'utf8'));
    return [...all.filter((c) => c.owner !== colluder && request.survivors.includes(c.owner)), { owner: colluder, signature: forged }];
  }

  /**
   * Fault injection (tests) `secure.sybil`: the coordinator puts itself into the key round as one more owner, its keys
   * signed with its own TLS server key (GRAMFUSE_FAULT_SYBIL_CERT / _KEY: the files it serves with), so shares sealed for
   * "it" are shares it can open.
   */
  private addSybil(job: Job, state: SecureState, answered: string[]): string[] {
    const certificatePem = readFileSync(process.env.GRAMFUSE_FAULT_SYBIL_CERT!, 'utf8');
    const keyPem = readFileSync(process.env.GRAMFUSE_FAULT_SYBIL_KEY!, 'utf8');
    const owner = certificateName(certificatePem);
    const pair = () => generateKeyPairSync('x25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const ad = signAdvertisement(
      {
        job: job.spec.id,
        owner,
        maskPublicKey: pair(),
        encryptionPublicKey: pair(),
        selfSeedCommitment: seedCommitment(job.spec.id, owner, randomBytes(32)),
        bounds: state.advertisements[answered[0]!]!.bounds,
      },
      keyPem,
    );
    const { job: _job, owner: _owner, ...keys } = ad;
    state.advertisements[owner] = { ...keys, certificatePem };
    return [...answered, owner].sort();
  }

  /**
   * A sealed share as relayed. Fault injection (tests) `secure.garbage-share`: the last sharer's share for the first one
   * is replaced by random bytes of the same length (a broken or malicious peer or relay); the recipient must drop that
   * share, not the round.
   */
  private relayed(from: string, to: string, state: SecureState, sealed: string): string {
    const sharers = state.sharers ?? [];
    if (sharers.length < 2 || from !== sharers[sharers.length - 1] || to !== sharers[0] || !faultInjected('secure.garbage-share'))
      return sealed;
    return randomBytes(Buffer.from(sealed, 'base64').byteLength).toString('base64');
  }

  /** The round as `identity` may see it. */
  view(identity: string, job: Job): RoundView {
    const state = this.state(job);
    const jobId = job.spec.id;
    const members = state.members ?? [];
    let advertisements = members.map((owner) => {
      const a = state.advertisements[owner]!;
      return {
        owner,
        maskPublicKey: a.maskPublicKey,
        encryptionPublicKey: a.encryptionPublicKey,
        selfSeedCommitment: a.selfSeedCommitment,
        signature: a.signature,
        certificatePem: a.certificatePem,
        bounds: a.bounds,
      };
    });
    // Fault injection (tests): a coordinator that puts its own key in place of the first owner's; agents must refuse it.
    if (advertisements.length > 0 && faultInjected('secure.substitute-key')) {
      const forged = generateKeyPairSync('x25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
      advertisements = [{ ...advertisements[0]!, maskPublicKey: forged }, ...advertisements.slice(1)];
    }
    const uploading = state.phase !== 'advertising' && state.phase !== 'sharing';
    return {
      job: jobId,
      phase: state.phase,
      // Fault injection (tests): a coordinator that tells owners t = 1, so one share would give a secret away.
      threshold:
        faultInjected('secure.low-threshold') ||
        (faultInjected('secure.late-threshold') && (state.phase === 'confirming' || state.phase === 'unmasking'))
          ? 1
          : secureThreshold(job.spec),
      minOwners: job.spec.privacy.minOwners,
      advertisements,
      ...(state.scale === undefined ? {} : { scale: state.scale }),
      ...(uploading ? { sharers: state.sharers ?? [] } : {}),
      ...(uploading
        ? {
            inbox: Object.entries(state.shares)
              .filter(([from, to]) => (state.sharers ?? []).includes(from) && to[identity] !== undefined)
              .map(([from, to]) => ({ from, sealed: this.relayed(from, identity, state, to[identity]!) })),
          }
        : {}),
      ...(state.unmask === undefined || state.phase === 'summed' ? {} : { unmask: this.shown(identity, state)! }),
      ...(state.phase === 'unmasking' ? { confirmations: this.confirmationsFor(identity, jobId, state) } : {}),
      done: {
        advertised: state.advertisements[identity] !== undefined,
        shared: state.shares[identity] !== undefined,
        confirmed: state.confirmations?.[identity] !== undefined,
        revealed: state.reveals[identity] !== undefined,
      },
    };
  }

  /** The round view for the Round RPC (the caller must be a participant: checked by authorize). */
  round(identity: string, jobId: string): RoundView {
    return this.view(identity, this.secureJob(jobId));
  }
}
