import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** gramfuse's version, read from the package.json above this file (works from source and from dist/). */
export function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, 'package.json');
    if (existsSync(candidate)) {
      const json = JSON.parse(readFileSync(candidate, 'utf8')) as { name?: string; version?: string };
      if (json.name === 'gramfuse') return json.version ?? '0.0.0';
    }
    dir = dirname(dir);
  }
  return '0.0.0';
}
