// Admission: whether an owner's manifest may join a job. A pure check against the job's spec and template
// analysis (no state, no I/O): the template decides which statistics may exist and with which shapes, so an
// agent cannot send a tensor the model does not have.
import { ErrorCode, GramfuseError, schemaProblems } from '../../shared/index.js';
import type { JobSpec } from '../../shared/federation/index.js';
import { JoinManifest, planDisclosure } from '../../shared/merge/index.js';
import type { ModelAnalysis } from '../../shared/onnx/index.js';

/**
 * The owner's manifest, parsed and checked; throws UPLOAD_INVALID, FINGERPRINT_MISMATCH or POLICY_VIOLATION naming the
 * problem. Only its plan is kept: anything else an agent sends (an older agent's bundle settings: local paths,
 * timings) is dropped here, never stored.
 */
export function admitManifest(
  identity: string,
  spec: JobSpec,
  analysis: ModelAnalysis,
  fingerprintValue: string,
  manifestJson: string,
): JoinManifest {
  if (fingerprintValue !== analysis.fingerprint) {
    throw new GramfuseError(
      ErrorCode.FingerprintMismatch,
      `${identity}'s model has fingerprint ${fingerprintValue}, the job's template ${analysis.fingerprint}`,
      { facts: { identity, job: spec.id } },
    );
  }
  let manifest: JoinManifest;
  try {
    const parsed = JoinManifest.strip().safeParse(JSON.parse(manifestJson));
    if (!parsed.success) {
      throw new Error(schemaProblems(parsed.error.issues, 5));
    }
    manifest = parsed.data;
  } catch (error) {
    throw new GramfuseError(
      ErrorCode.UploadInvalid,
      `${identity}: the manifest is not a valid statistics manifest (${(error as Error).message.slice(0, 400)})`,
      { facts: { identity } },
    );
  }
  const plan = manifest.plan;
  if (plan.owner !== identity)
    throw new GramfuseError(ErrorCode.UploadInvalid, `manifest owner ${plan.owner} is not the caller ${identity}`, {
      facts: { identity },
    });
  const m = spec.merge;
  if (
    plan.spec.method !== m.method ||
    plan.spec.alpha !== m.alpha ||
    plan.spec.weighting !== m.weighting ||
    plan.spec.includePadding !== m.includePadding
  ) {
    throw new GramfuseError(
      ErrorCode.UploadInvalid,
      `${identity}: statistics were collected with ${JSON.stringify(plan.spec)}, the job needs ${JSON.stringify(m)}`,
      { facts: { identity } },
    );
  }
  // The template decides which statistics may exist, with which shapes: an agent cannot send a tensor the model does not have.
  const expected = new Map(planDisclosure(identity, analysis, spec.merge, 'float64', spec.policy).statistics.map((s) => [s.id, s]));
  for (const s of plan.statistics) {
    const e = expected.get(s.id);
    if (e === undefined)
      throw new GramfuseError(ErrorCode.UploadInvalid, `${identity}: statistic ${s.id} is not in the job's template`, {
        facts: { identity, statistic: s.id },
      });
    // A secure job takes masked statistics only (fixed point in Z/2⁶⁴), a plain job never: a mix would be summed wrong.
    const secure = spec.privacy.secureAggregation;
    if (secure !== (s.dtype === 'ring64'))
      throw new GramfuseError(
        ErrorCode.UploadInvalid,
        secure
          ? `${identity}: statistic ${s.id} is ${s.dtype}, but job ${spec.id} uses secure aggregation: every statistic must be masked (ring64); run a gramfuse agent that supports privacy.secureAggregation`
          : `${identity}: statistic ${s.id} is masked (ring64), but job ${spec.id} does not use secure aggregation`,
        { facts: { identity, statistic: s.id } },
      );
    if (e.shape.join(',') !== s.shape.join(',') || (s.kind === 'count' && s.dtype === 'float32')) {
      throw new GramfuseError(
        ErrorCode.UploadInvalid,
        `${identity}: statistic ${s.id} has shape [${s.shape.join(', ')}], the template needs [${e.shape.join(', ')}]`,
        { facts: { identity, statistic: s.id } },
      );
    }
    const width = s.dtype === 'float64' || s.dtype === 'ring64' ? 8 : s.dtype === 'float32' ? 4 : 0;
    const bytes = e.shape.reduce((a, b) => a * b, 1) * width;
    if (width === 0 || s.bytes !== bytes)
      throw new GramfuseError(
        ErrorCode.UploadInvalid,
        `${identity}: statistic ${s.id} declares ${s.bytes} bytes of ${s.dtype}, but its shape [${e.shape.join(', ')}] holds ${bytes}`,
        { facts: { identity, statistic: s.id } },
      );
    if (s.sha256 === undefined)
      throw new GramfuseError(ErrorCode.UploadInvalid, `${identity}: statistic ${s.id} has no SHA-256 in the manifest`, {
        facts: { statistic: s.id },
      });
    // A masked manifest carries no per-owner row counts (they would say how much data each owner has): under secure
    // aggregation each agent enforces minRowsPerGroup itself before masking (the owner's policy is final anyway).
    if (!secure && s.kind === 'gram' && (s.rows ?? 0) < spec.policy.minRowsPerGroup) {
      throw new GramfuseError(
        ErrorCode.PolicyViolation,
        `${identity}: ${s.id} comes from ${s.rows ?? 0} rows, the job's policy needs ${spec.policy.minRowsPerGroup}`,
        { facts: { statistic: s.id } },
      );
    }
  }
  if (plan.statistics.length !== expected.size)
    throw new GramfuseError(
      ErrorCode.UploadInvalid,
      `${identity}: the manifest lists ${plan.statistics.length} statistics, the job needs ${expected.size}`,
      { facts: { identity } },
    );
  return manifest;
}

/** Refuses a join whose declared bytes would take the job past limits.maxJobBytes (RESOURCE_EXHAUSTED). */
export function checkJobBudget(spec: JobSpec, identity: string, ownBytes: number, othersBytes: number): void {
  if (othersBytes + ownBytes > spec.limits.maxJobBytes) {
    throw new GramfuseError(
      ErrorCode.ResourceExhausted,
      `job ${spec.id}: ${identity}'s ${ownBytes} bytes would bring the job to ${othersBytes + ownBytes} bytes, past its budget of ${spec.limits.maxJobBytes} (limits.maxJobBytes)`,
      { facts: { job: spec.id, bytes: ownBytes, limit: spec.limits.maxJobBytes } },
    );
  }
}
