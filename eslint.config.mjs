// Lint rules that enforce DESIGN.md §7: who may import whom, one entry per folder, no cycles,
// onnxruntime-node in one place, process.exit only in the CLI entry; plus typed safety rules.
import importPlugin from 'eslint-plugin-import';
import tseslint from 'typescript-eslint';

const onlyEntry = (folder) => [`**/${folder}/**`, `!**/${folder}/index.js`];
// shared/ has one entry per domain (shared/onnx/index.js, shared/merge/index.js, …) and a root entry of light
// helpers; there is no roll-up, so importing one domain never loads another's dependencies (DESIGN.md §7).
// errors.js and version.js load nothing at all: the CLI entry imports them statically, so that `gramfuse --help`
// loads neither onnxruntime-node nor NATS (everything else lazily).
const sharedDomainEntries = ['**/shared/*.js', '!**/shared/index.js', '**/shared/*/*', '!**/shared/*/index.js'];
const sharedEntries = [...sharedDomainEntries, '!**/shared/errors.js', '!**/shared/version.js'];
const restrict = (groups, message) => ({ group: groups, message });

const boundaries = {
  agent: [
    restrict(['**/coordinator/**', '**/cli/**', '**/solver/**'], 'agent/ never imports coordinator/, solver/ or cli/ (DESIGN.md §7).'),
    restrict(onlyEntry('client'), 'import client/ only through client/index.js.'),
    restrict(sharedDomainEntries, 'import shared/ only through its entries: shared/index.js or shared/<domain>/index.js.'),
    restrict(['**/proto/gen/**'], 'generated code is reached only through proto/index.js.'),
  ],
  coordinator: [
    restrict(
      ['**/agent/**', '**/cli/**', '**/client/**', '**/solver/**', '**/dashboard/**'],
      'coordinator/ never imports agent/, client/, solver/, dashboard/ or cli/ (DESIGN.md §7).',
    ),
    restrict(sharedDomainEntries, 'import shared/ only through its entries: shared/index.js or shared/<domain>/index.js.'),
    restrict(['**/proto/gen/**'], 'generated code is reached only through proto/index.js.'),
  ],
  solver: [
    restrict(
      ['**/agent/**', '**/coordinator/**', '**/cli/**', '**/dashboard/**'],
      'solver/ never imports agent/, coordinator/ or cli/ (DESIGN.md §7).',
    ),
    restrict(onlyEntry('client'), 'import client/ only through client/index.js.'),
    restrict(sharedDomainEntries, 'import shared/ only through its entries: shared/index.js or shared/<domain>/index.js.'),
    restrict(['**/proto/gen/**'], 'generated code is reached only through proto/index.js.'),
  ],
  dashboard: [
    restrict(
      ['**/agent/**', '**/coordinator/**', '**/cli/**', '**/solver/**'],
      'dashboard/ never imports agent/, coordinator/, solver/ or cli/: it reads the coordinator through client/ (DESIGN.md §7).',
    ),
    restrict(onlyEntry('client'), 'import client/ only through client/index.js.'),
    restrict(sharedDomainEntries, 'import shared/ only through its entries: shared/index.js or shared/<domain>/index.js.'),
    restrict(['**/proto/gen/**'], 'generated code is reached only through proto/index.js.'),
  ],
  client: [
    restrict(['**/agent/**', '**/coordinator/**', '**/cli/**'], 'client/ imports only shared/ and proto/ (DESIGN.md §7).'),
    restrict(sharedDomainEntries, 'import shared/ only through its entries: shared/index.js or shared/<domain>/index.js.'),
    restrict(['**/proto/gen/**'], 'generated code is reached only through proto/index.js.'),
  ],
  shared: [
    restrict(['**/agent/**', '**/coordinator/**', '**/cli/**', '**/client/**'], 'shared/ is the base: it imports neither side.'),
    restrict(['**/proto/gen/**'], 'generated code is reached only through proto/index.js.'),
  ],
  outside: [
    restrict(
      sharedEntries,
      'import shared/ only through its entries: shared/index.js, shared/<domain>/index.js (or errors.js, version.js).',
    ),
    restrict(onlyEntry('agent'), 'import agent/ only through agent/index.js.'),
    restrict(onlyEntry('coordinator'), 'import coordinator/ only through coordinator/index.js.'),
    restrict(onlyEntry('client'), 'import client/ only through client/index.js.'),
    restrict(onlyEntry('solver'), 'import solver/ only through solver/index.js.'),
    restrict(onlyEntry('dashboard'), 'import dashboard/ only through dashboard/index.js.'),
    restrict(['**/proto/gen/**'], 'generated code is reached only through proto/index.js.'),
  ],
  // bench/ and test/ also reach cli/ only through its entry.
  consumers: [restrict(onlyEntry('cli'), 'import cli/ only through cli/index.js.')],
};

const noOrt = { name: 'onnxruntime-node', message: 'onnxruntime-node is imported only in shared/onnx/runtime.ts (and the agent worker).' };

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'proto/gen/**', 'scratch/**', 'eslint.config.mjs', 'scripts/*.mjs', 'test/helpers/*.mjs'] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    plugins: { import: importPlugin },
    settings: {
      'import/resolver': { typescript: { project: './tsconfig.json' } },
      'import/parsers': { '@typescript-eslint/parser': ['.ts'] },
      'import/extensions': ['.ts', '.js', '.mjs'],
    },
    rules: {
      'import/no-cycle': 'error',
      'import/no-self-import': 'error',
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-properties': ['error', { object: 'process', property: 'exit', message: 'process.exit only in cli/main.ts.' }],
    },
  },
  { files: ['agent/**/*.ts'], rules: { 'no-restricted-imports': ['error', { paths: [noOrt], patterns: boundaries.agent }] } },
  { files: ['client/**/*.ts'], rules: { 'no-restricted-imports': ['error', { paths: [noOrt], patterns: boundaries.client }] } },
  { files: ['solver/**/*.ts'], rules: { 'no-restricted-imports': ['error', { paths: [noOrt], patterns: boundaries.solver }] } },
  { files: ['dashboard/**/*.ts'], rules: { 'no-restricted-imports': ['error', { paths: [noOrt], patterns: boundaries.dashboard }] } },
  { files: ['coordinator/**/*.ts'], rules: { 'no-restricted-imports': ['error', { paths: [noOrt], patterns: boundaries.coordinator }] } },
  {
    files: ['shared/**/*.ts'],
    ignores: ['shared/onnx/runtime.ts'],
    rules: { 'no-restricted-imports': ['error', { paths: [noOrt], patterns: boundaries.shared }] },
  },
  {
    files: ['cli/**/*.ts', 'bench/**/*.ts', 'test/**/*.ts', 'scripts/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: boundaries.outside }] },
  },
  { files: ['cli/main.ts'], rules: { 'no-restricted-properties': 'off' } },
  {
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
    },
  },
);
