import { ErrorCode, GramfuseError } from '../../shared/index.js';
import { type ModelInput, OrtTensor, type Tensor } from '../../shared/onnx/index.js';
import type { TokenizedExample } from './tokenizer.js';

/** What each model input is fed with, decided from its name once per model. */
export type InputRole = 'ids' | 'mask' | 'typeIds' | 'positions';

export function inputRoles(inputs: readonly ModelInput[]): Map<string, InputRole> {
  const roles = new Map<string, InputRole>();
  for (const input of inputs) {
    const name = input.name.toLowerCase();
    const role: InputRole | undefined = /mask/.test(name)
      ? 'mask'
      : /token_type|segment/.test(name)
        ? 'typeIds'
        : /position/.test(name)
          ? 'positions'
          : /input_ids|^ids$|input$/.test(name)
            ? 'ids'
            : undefined;
    if (role === undefined || input.dims.length !== 2) {
      throw new GramfuseError(
        ErrorCode.OnnxUnsupportedGraph,
        `model input ${input.name} [${input.dims.join(', ')}]: gramfuse feeds text models only (input_ids, attention_mask, token_type_ids, position_ids, each [batch, sequence])`,
        { facts: { input: input.name } },
      );
    }
    roles.set(input.name, role);
  }
  if (![...roles.values()].includes('ids')) {
    throw new GramfuseError(ErrorCode.OnnxUnsupportedGraph, 'the model has no input_ids input; gramfuse feeds text models only', {
      facts: { inputs: inputs.map((i) => i.name).join(',') },
    });
  }
  return roles;
}

/**
 * Model feeds for one batch: padded on the right to the longest example (or to `padTo`), with the
 * attention mask marking real tokens. Every input the model declares gets a tensor; nothing is assumed.
 */
export function buildFeeds(
  examples: readonly TokenizedExample[],
  inputs: readonly ModelInput[],
  roles: ReadonlyMap<string, InputRole>,
  padId: number,
  padTo?: number,
): Record<string, Tensor> {
  const length = Math.max(padTo ?? 0, ...examples.map((e) => e.ids.length));
  const batch = examples.length;
  const feeds: Record<string, Tensor> = {};
  for (const input of inputs) {
    const role = roles.get(input.name)!;
    const values = new BigInt64Array(batch * length);
    examples.forEach((example, row) => {
      const base = row * length;
      for (let t = 0; t < length; t++) {
        const real = t < example.ids.length;
        let value: number;
        switch (role) {
          case 'ids':
            value = real ? example.ids[t]! : padId;
            break;
          case 'mask':
            value = real ? 1 : 0;
            break;
          case 'typeIds':
            value = real ? (example.typeIds[t] ?? 0) : 0;
            break;
          case 'positions':
            value = t;
            break;
        }
        values[base + t] = BigInt(value);
      }
    });
    feeds[input.name] =
      input.dtype === 'int32'
        ? new OrtTensor('int32', Int32Array.from(values, Number), [batch, length])
        : new OrtTensor('int64', values, [batch, length]);
  }
  return feeds;
}
