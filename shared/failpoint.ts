/**
 * Crash injection for the fault tests (test/integration/faults): with GRAMFUSE_FAILPOINT="<site>:<n>" in
 * the environment, the n-th time this process reaches <site> it kills itself with SIGKILL — no cleanup,
 * no flush, as a power cut or an OOM kill would. Without the variable each call is one comparison.
 */
const target = ((): { site: string; count: number } | undefined => {
  const value = process.env.GRAMFUSE_FAILPOINT;
  const match = value === undefined ? null : /^([a-z.]+):(\d+)$/.exec(value);
  return match === null ? undefined : { site: match[1]!, count: Number(match[2]) };
})();
const hits = new Map<string, number>();

export function failpoint(site: string): void {
  if (target === undefined || site !== target.site) return;
  const n = (hits.get(site) ?? 0) + 1;
  hits.set(site, n);
  if (n !== target.count) return;
  process.stderr.write(`failpoint ${site}:${n}: killing process ${process.pid}\n`);
  process.kill(process.pid, 'SIGKILL');
}

/**
 * Fault injection without a crash (the distributed-solve tests): with GRAMFUSE_FAULT="<site>" in the environment every
 * call for <site> answers true, with "<site>:<n>" only the n-th; the caller then misbehaves as that site documents.
 */
const fault = ((): { site: string; count: number | undefined } | undefined => {
  const value = process.env.GRAMFUSE_FAULT;
  const match = value === undefined ? null : /^([a-z.-]+)(?::(\d+))?$/.exec(value);
  return match === null ? undefined : { site: match[1]!, count: match[2] === undefined ? undefined : Number(match[2]) };
})();
const faultHits = new Map<string, number>();

export function faultInjected(site: string): boolean {
  if (fault === undefined || site !== fault.site) return false;
  const n = (faultHits.get(site) ?? 0) + 1;
  faultHits.set(site, n);
  return fault.count === undefined || n === fault.count;
}
