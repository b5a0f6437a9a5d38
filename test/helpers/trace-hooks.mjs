import { appendFileSync } from 'node:fs';

export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  if (process.env.GRAMFUSE_TRACE_IMPORTS) appendFileSync(process.env.GRAMFUSE_TRACE_IMPORTS, `${resolved.url}\n`);
  return resolved;
}
