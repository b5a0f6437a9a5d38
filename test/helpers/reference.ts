import { readFileSync } from 'node:fs';

import { fixture } from './fixtures.js';

/** `../shared/fixtures/reference.json`: accuracies of the reference implementation (never hard-coded here). */
export interface ReferenceScenario {
  readonly settings: Readonly<Record<string, number | string>>;
  readonly accuracy: Record<string, Record<string, number>>;
}

export function referenceFigures(scenario: 'label-skew' | 'languages'): ReferenceScenario {
  return (JSON.parse(readFileSync(fixture('reference.json'), 'utf8')) as Record<string, ReferenceScenario>)[scenario]!;
}

/** Organizations of a scenario, from its scenario file. */
export function scenarioOrgs(scenario: 'label-skew' | 'languages'): string[] {
  const json = JSON.parse(readFileSync(fixture('scenarios', `${scenario}.json`), 'utf8')) as { orgs: { name: string }[] };
  return json.orgs.map((o) => o.name);
}

/** The test languages the reference reports for a scenario. */
export function referenceLanguages(scenario: 'label-skew' | 'languages'): string[] {
  return Object.keys(referenceFigures(scenario).accuracy.regmean ?? {});
}
