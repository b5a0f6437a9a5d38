import { realpath, stat } from 'node:fs/promises';
import { resolve as resolvePath, sep } from 'node:path';

import { ErrorCode, GramfuseError } from '../../shared/index.js';

/**
 * A template named by path must lie inside a directory the operator allowed (`templateDirs`), after
 * symbolic links are resolved; the answer is the same whether or not the file exists, so the remote API
 * can neither read nor probe anything else on this disk.
 */
export async function allowedTemplatePath(requested: string, templateDirs: readonly string[]): Promise<string> {
  const refuse = (): never => {
    throw new GramfuseError(
      ErrorCode.NotAuthorized,
      `template path "${requested}" is not a file inside a template directory of this coordinator; send the template's bytes, or ask the operator to allow its directory (coordinator serve --template-dir)`,
      { facts: { templatePath: requested } },
    );
  };
  if (requested.includes('\0')) refuse();
  for (const dir of templateDirs) {
    let root: string;
    try {
      root = await realpath(dir);
    } catch {
      continue;
    }
    const candidate = resolvePath(root, requested);
    if (!candidate.startsWith(`${root}${sep}`)) continue;
    try {
      const real = await realpath(candidate);
      if (real.startsWith(`${root}${sep}`) && (await stat(real)).isFile()) return real;
    } catch {
      // absent: refused below like any other path outside
    }
  }
  return refuse();
}
