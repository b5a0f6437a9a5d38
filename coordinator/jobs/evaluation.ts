// An owner's report of how the merged model did on its held-out data, checked before it is recorded.

/** What is wrong with an owner's evaluation report (empty when nothing is). */
export function evaluationProblems(metrics: { examples: number; accuracy: number; macroF1: number }): string[] {
  const problems: string[] = [];
  if (!Number.isSafeInteger(metrics.examples) || metrics.examples < 1)
    problems.push(`examples must be a whole number ≥ 1 (got ${metrics.examples})`);
  for (const key of ['accuracy', 'macroF1'] as const)
    if (!Number.isFinite(metrics[key]) || metrics[key] < 0 || metrics[key] > 1)
      problems.push(`${key} must be in [0, 1] (got ${metrics[key]})`);
  return problems;
}
