import { DECODER_PRESETS, writeSyntheticDecoder } from './synthetic-decoder.js';
for (const seed of [1, 2])
  await writeSyntheticDecoder(`/tmp/t/fp16-${seed}.onnx`, { ...DECODER_PRESETS['tiny-llama'], dtype: 'float16', seed });
