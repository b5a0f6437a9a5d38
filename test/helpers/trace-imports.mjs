// `node --import ./test/helpers/trace-imports.mjs …`: every module URL the ESM loader resolves is appended to
// $GRAMFUSE_TRACE_IMPORTS, one per line (the test that `gramfuse --help` loads neither onnxruntime nor NATS).
import { register } from 'node:module';

register('./trace-hooks.mjs', import.meta.url);
