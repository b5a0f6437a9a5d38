import { describe, expect, it } from 'vitest';

import { type Action, authorize, canSee } from '../../../coordinator/index.js';
import { ErrorCode, type GramfuseError } from '../../../shared/index.js';

// The one authorization table (coordinator/server/auth.ts), row by row: who may do what on a job.
const job = { id: 'j1', participants: ['org0', 'org1'], createdBy: 'creator' };
const config = { creators: ['creator'], solvers: ['solver-1'], observers: ['auditor'] };

function allowed(identity: string, action: Action): boolean {
  try {
    authorize(identity, action, action === 'job.create' ? undefined : job, config);
    return true;
  } catch (error) {
    expect((error as GramfuseError).code).toBe(ErrorCode.NotAuthorized);
    return false;
  }
}

describe('authorize', () => {
  const expected: Record<string, Record<Action, boolean>> = {
    org0: {
      'job.create': false,
      'job.read': true,
      'job.upload': true,
      'result.read': true,
      'report.read': true,
      'result.report': true,
      'solve.work': false,
      'secure.exchange': true,
    },
    creator: {
      'job.create': true,
      'job.read': true,
      'job.upload': false,
      'result.read': true,
      'report.read': true,
      'result.report': false,
      'solve.work': false,
      'secure.exchange': false,
    },
    auditor: {
      'job.create': false,
      'job.read': true,
      'job.upload': false,
      'result.read': false,
      'report.read': true,
      'result.report': false,
      'solve.work': false,
      'secure.exchange': false,
    },
    'solver-1': {
      'job.create': false,
      'job.read': false,
      'job.upload': false,
      'result.read': false,
      'report.read': false,
      'result.report': false,
      'solve.work': true,
      'secure.exchange': false,
    },
    stranger: {
      'job.create': false,
      'job.read': false,
      'job.upload': false,
      'result.read': false,
      'report.read': false,
      'result.report': false,
      'solve.work': false,
      'secure.exchange': false,
    },
  };
  for (const [identity, actions] of Object.entries(expected))
    it(`${identity}: ${Object.entries(actions)
      .filter(([, v]) => v)
      .map(([a]) => a)
      .join(', ')}, nothing else`, () => {
      for (const [action, want] of Object.entries(actions)) expect([action, allowed(identity, action as Action)]).toEqual([action, want]);
    });

  it('an observer sees every job in a list, and is told it reads reports only when it asks for a merged model', () => {
    expect(canSee('auditor', job, config)).toBe(true);
    expect(canSee('auditor', job)).toBe(false);
    expect(canSee('stranger', job, config)).toBe(false);
    expect(() => authorize('auditor', 'result.read', job, config)).toThrow(/an observer reads its status and report.json only/);
  });
});
