import { readFileSync } from 'node:fs';

import { fixture } from './fixtures.js';

/** `../shared/fixtures/reference.json`: accuracies of the reference implementation (never hard-coded here). */
export interface ReferenceScenario {
  readonly settings: Readonly<Record<string, number | string>>;
  readonly accuracy: Record<string, Record<string, number>>;
}

/** A scenario of reference.json; label-skew-v1 has its own models but label-skew's orgs and data. */
export type ReferenceScenarioName = 'label-skew' | 'label-skew-v1' | 'languages';

/** The scenario whose `scenarios/` data a model scenario was fine-tuned on. */
export const dataScenario = (scenario: ReferenceScenarioName): 'label-skew' | 'languages' =>
  scenario === 'label-skew-v1' ? 'label-skew' : scenario;

export function referenceFigures(scenario: ReferenceScenarioName): ReferenceScenario {
  return (JSON.parse(readFileSync(fixture('reference.json'), 'utf8')) as Record<string, ReferenceScenario>)[scenario]!;
}

/** Organizations of a scenario, from its scenario file. */
export function scenarioOrgs(scenario: ReferenceScenarioName): string[] {
  const json = JSON.parse(readFileSync(fixture('scenarios', `${dataScenario(scenario)}.json`), 'utf8')) as { orgs: { name: string }[] };
  return json.orgs.map((o) => o.name);
}

/** The test languages the reference reports for a scenario. */
export function referenceLanguages(scenario: ReferenceScenarioName): string[] {
  return Object.keys(referenceFigures(scenario).accuracy.regmean ?? {});
}
