// @needs-fixtures: reads the full fixture set (../shared/fixtures, or GRAMFUSE_FIXTURES); skipped where it is absent, never in CI.
import { describe, expect, it } from 'vitest';

import { ErrorCode, GramfuseError } from '../../../shared/index.js';
import { analyzeModel, inspectReport, loadModel } from '../../../shared/onnx/index.js';
import { ALL_MODELS, fixtureModel } from '../../helpers/fixtures.js';
import { syntheticModel } from '../../helpers/models.js';

/** Facts about each fixture architecture (see ../shared/fixtures/README.md), not measured figures. */
const expected = {
  // 2 layers × (q, k, v, attention out, FFN in, FFN out) + pooler + classifier; q/k/v share a Gram.
  'bert-classic': { linear: 14, groups: 10, all: 2 },
  'bert-dynamo': { linear: 14, groups: 10, all: 2 },
  // 2 layers × (c_attn, c_proj, c_fc, mlp c_proj) + score; Conv1D weights are [in, out].
  gpt2: { linear: 9, groups: 9, all: 0 },
  // 2 layers × (q, k, v, o, wi, wo) + the mean-pooled classifier; no biases.
  t5: { linear: 13, groups: 9, all: 1 },
} as const;

describe('analysis of every fixture model', () => {
  it.each(ALL_MODELS.map((m) => [m.path.split('/models/')[1]!, m.path, m.family] as const))('%s', async (_name, path, family) => {
    const report = inspectReport(await analyzeModel(await loadModel(path)));
    const want = expected[family];
    expect(report.linearLayers).toHaveLength(want.linear);
    expect(report.gramGroups).toHaveLength(want.groups);
    const allRows = report.gramGroups.filter((g) => g.inputs.every((i) => i.rows === 'all'));
    expect(allRows).toHaveLength(want.all);
    for (const group of report.gramGroups) {
      for (const input of group.inputs) if (input.rows === 'tokens') expect(input.mask).toBe('attention_mask');
    }
    // Every weight is in exactly one group, and group dims match their layers.
    const grouped = report.gramGroups.flatMap((g) => g.weights);
    expect(new Set(grouped).size).toBe(report.linearLayers.length);
    for (const layer of report.linearLayers) {
      const group = report.gramGroups.find((g) => g.weights.includes(layer.weight))!;
      expect(group.inDim).toBe(layer.inDim);
    }
    expect(report.statistics.gramBytesFloat32Packed).toBe(report.gramGroups.reduce((s, g) => s + g.inDim * (g.inDim + 1) * 2, 0));
    expect(report.statistics.rhsBytesFloat32).toBe(report.linearLayers.reduce((s, l) => s + l.inDim * l.outDim * 4, 0));
    expect(report.averaged).toEqual([]);
  });

  it('finds orientation and biases as the exporters stored them', async () => {
    const bert = inspectReport(await analyzeModel(await loadModel(fixtureModel('label-skew', 'org0'))));
    const classifier = bert.linearLayers.find((l) => l.weight === 'm.classifier.weight')!;
    expect(classifier).toMatchObject({ orientation: 'out_in', inDim: 128, outDim: 14, bias: 'm.classifier.bias' });
    const ffnIn = bert.linearLayers.find((l) => l.outDim === 512)!;
    expect(ffnIn).toMatchObject({ orientation: 'in_out', inDim: 128, bias: 'm.bert.encoder.layer.0.intermediate.dense.bias' });
    const qkv = bert.gramGroups[0]!;
    expect(qkv.weights).toHaveLength(3);

    const gpt2 = inspectReport(await analyzeModel(await loadModel(fixtureModel('tiny', 'gpt2-a'))));
    const cAttn = gpt2.linearLayers.find((l) => l.weight === 'm.transformer.h.0.attn.c_attn.weight')!;
    expect(cAttn).toMatchObject({ orientation: 'in_out', inDim: 64, outDim: 192, bias: 'm.transformer.h.0.attn.c_attn.bias' });

    const t5 = inspectReport(await analyzeModel(await loadModel(fixtureModel('tiny', 't5-a'))));
    expect(t5.linearLayers.filter((l) => l.bias !== null).map((l) => l.weight)).toEqual(['m.classifier.weight']);
  });

  it('fingerprints agree within one base and exporter, and differ across architectures and exporters', async () => {
    const prints = new Map<string, Set<string>>();
    for (const model of ALL_MODELS) {
      const report = inspectReport(await analyzeModel(await loadModel(model.path)));
      expect(report.fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
      let set = prints.get(model.family);
      if (set === undefined) prints.set(model.family, (set = new Set()));
      set.add(report.fingerprint);
    }
    for (const set of prints.values()) expect(set.size).toBe(1);
    const distinct = new Set([...prints.values()].map((s) => [...s][0]));
    expect(distinct.size).toBe(4);
  });
});

describe('graph shapes built for the purpose', () => {
  const linearChain = (extra: Parameters<typeof syntheticModel>[0]['nodes'] = []) =>
    syntheticModel({
      inputs: [{ name: 'x', dims: ['batch', 4] }],
      initializers: [
        { name: 'W', dims: [4, 4] },
        { name: 'b', dims: [4] },
      ],
      nodes: [{ op: 'MatMul', inputs: ['x', 'W'], output: 'y' }, { op: 'Add', inputs: ['y', 'b'], output: 'z' }, ...extra],
      outputs: ['z', ...extra.map((n) => n.output)],
    });

  it('a weight applied to two different tensors gets one group over both inputs', async () => {
    const model = linearChain([
      { op: 'Relu', inputs: ['z'], output: 'h' },
      { op: 'MatMul', inputs: ['h', 'W'], output: 'y2' },
    ]);
    const report = inspectReport(await analyzeModel(model));
    expect(report.gramGroups).toHaveLength(1);
    expect(report.gramGroups[0]!.inputs.map((i) => i.tensor)).toEqual(['x', 'h']);
    expect(report.gramGroups[0]!.inputs.every((i) => i.rows === 'all')).toBe(true);
    // The bias does not follow both uses alike, so none is recorded.
    expect(report.linearLayers[0]!.bias).toBeNull();
  });

  it('a weight reached through Transpose is out_in', async () => {
    const model = syntheticModel({
      inputs: [{ name: 'x', dims: ['batch', 3] }],
      initializers: [{ name: 'W', dims: [5, 3] }],
      nodes: [
        { op: 'Transpose', inputs: ['W'], output: 'Wt', attributes: {} },
        { op: 'MatMul', inputs: ['x', 'Wt'], output: 'y' },
      ],
      outputs: ['y'],
    });
    const report = inspectReport(await analyzeModel(model));
    expect(report.linearLayers[0]).toMatchObject({ weight: 'W', orientation: 'out_in', inDim: 3, outDim: 5 });
  });

  it('a tied weight (also used by Gather) is averaged and reported as such', async () => {
    const model = syntheticModel({
      inputs: [
        { name: 'x', dims: ['batch', 4] },
        { name: 'ids', dims: ['batch'], elemType: 7 },
      ],
      initializers: [
        { name: 'E', dims: [4, 4] },
        { name: 'W', dims: [4, 4] },
      ],
      nodes: [
        { op: 'Gather', inputs: ['E', 'ids'], output: 'e' },
        { op: 'MatMul', inputs: ['x', 'E'], output: 'y' },
        { op: 'MatMul', inputs: ['x', 'W'], output: 'y2' },
      ],
      outputs: ['e', 'y', 'y2'],
    });
    const report = inspectReport(await analyzeModel(model));
    expect(report.linearLayers.map((l) => l.weight)).toEqual(['W']);
    expect(report.averaged).toEqual([{ tensor: 'E', reason: expect.stringMatching(/also by Gather .*tied parameter.*averaged/) }]);
  });

  it('a model with no linear layer is a coded error', async () => {
    const model = syntheticModel({
      inputs: [{ name: 'x', dims: ['batch', 4] }],
      initializers: [{ name: 'b', dims: [4] }],
      nodes: [{ op: 'Add', inputs: ['x', 'b'], output: 'y' }],
      outputs: ['y'],
    });
    const error = await analyzeModel(model).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GramfuseError);
    expect((error as GramfuseError).code).toBe(ErrorCode.OnnxNoLinearLayers);
    expect((error as GramfuseError).message).toMatch(/no linear layer found/);
  });

  it('token rows in a sequence-first layout are reported, not guessed', async () => {
    const model = syntheticModel({
      inputs: [
        { name: 'x', dims: ['batch', 'sequence', 4] },
        { name: 'attention_mask', dims: ['batch', 'sequence'], elemType: 7 },
      ],
      initializers: [{ name: 'W', dims: [4, 4] }],
      nodes: [
        { op: 'Transpose', inputs: ['x'], output: 'xt', attributes: {} },
        { op: 'MatMul', inputs: ['xt', 'W'], output: 'y' },
      ],
      outputs: ['y'],
    });
    // [sequence, batch, features]: token rows that a flattened mask would misalign.
    model.proto.graph!.node[0]!.attribute = [
      { name: 'perm', type: 7, ints: [1n, 0n, 2n], floats: [], strings: [], tensors: [], graphs: [], typeProtos: [], sparseTensors: [] },
    ];
    const error = await analyzeModel(model).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GramfuseError);
    expect((error as GramfuseError).code).toBe(ErrorCode.OnnxUnsupportedGraph);
    expect((error as GramfuseError).message).toMatch(
      /activation xt has token rows in layout \[7, 3, 4\] \(batch 3, length 7 in the probe\)/,
    );
  });
});
