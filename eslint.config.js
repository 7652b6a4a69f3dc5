// ESLint (flat config): the house style that tools enforce (issue 18 item 7). Prettier formats;
// this checks what a formatter cannot: function length, line length (comments and all), no
// floating promises, which folder may import which (DESIGN.md, "Layers"), and the pure cores
// (the coordinator and the Raft core read no clock, start no timer, touch no I/O or global
// randomness). test/arch/lint-rules.test.ts proves the layering and purity rules fire.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

/** A relative import that reaches into one of `folders` (by path segment). */
const into = (folders, message) => ({
  regex: `^\\.{1,2}/(?:.*/)?(?:${folders.join('|')})(?:/|$)`,
  message,
});

/** Globals that read the clock, start timers or reach the process. */
const IMPURE_GLOBALS = [
  'setTimeout',
  'setInterval',
  'setImmediate',
  'clearTimeout',
  'clearInterval',
  'clearImmediate',
  'process',
  'performance',
].map((name) => ({ name, message: 'a pure core takes time and timers through its Clock port' }));

const IMPURE_PROPERTIES = [
  { object: 'Math', property: 'random', message: 'a pure core takes randomness as input' },
  { object: 'Date', property: 'now', message: 'a pure core reads time through its Clock port' },
];

const IMPURE_SYNTAX = [
  {
    selector: "NewExpression[callee.name='Date'][arguments.length=0]",
    message: 'new Date() reads the clock: a pure core reads time through its Clock port',
  },
  {
    selector: "CallExpression[callee.name='Date']",
    message: 'Date() reads the clock: a pure core reads time through its Clock port',
  },
  {
    selector: 'ImportExpression',
    message: 'a pure core imports statically (the layering rules check static imports)',
  },
];

const LAYERS = {
  raft: into(
    ['coordinator', 'store', 'server', 'client', 'cli'],
    'the Raft layer imports nothing of the coordinator, stores, server, client or CLI',
  ),
  coordinator: into(
    ['raft', 'store', 'server', 'client', 'cli'],
    'the coordinator imports no Raft, store, server, client or CLI (only itself and src/shared)',
  ),
  store: into(
    ['server', 'client', 'cli'],
    'stores import neither the server, the client nor the CLI',
  ),
  client: into(
    ['raft', 'coordinator', 'store', 'server', 'cli'],
    'the client SDK shares only src/shared (types, protos) with the server',
  ),
};

/** The coordinator's packages: msgpackr (command codec) and pino (types of its logger). */
const COORDINATOR_PACKAGES = {
  regex: '^(?!\\.|msgpackr$|pino$)',
  message: 'the coordinator imports only itself, src/shared, msgpackr and pino: no I/O, no node:',
};
const RAFT_CORE_PACKAGES = {
  regex: '^(?:node:|fs$|net$|http$|level$|@grpc/)',
  message: 'the Raft core is pure: no disk, network or node: modules (use the driver and ports)',
};

const restrict = (...patterns) => ['error', { patterns }];

export default tseslint.config(
  {
    ignores: [
      '**/node_modules/**',
      '**/dist/**',
      'coverage/**',
      'data/**',
      'test/arch/fixtures/**',
    ],
  },
  {
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      'max-len': [
        'error',
        {
          code: 100,
          ignoreUrls: true,
          ignoreStrings: true,
          ignoreTemplateLiterals: true,
          ignoreRegExpLiterals: true,
        },
      ],
      'max-lines-per-function': [
        'error',
        { max: 70, skipBlankLines: true, skipComments: true, IIFEs: true },
      ],
      'no-control-regex': 'error',
    },
  },
  {
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: { '@typescript-eslint/no-floating-promises': 'error' },
  },
  {
    files: ['**/*.{js,mjs}'],
    languageOptions: { globals: globals.node },
    rules: { ...js.configs.recommended.rules },
  },
  // The web console's front end runs in the browser (src/server/console/static).
  {
    files: ['src/server/console/static/**/*.js'],
    languageOptions: { globals: globals.browser },
  },
  // Tests (and helpers that define a suite): describe and it callbacks are long by nature;
  // still no floating promises.
  {
    files: ['test/**/*.test.ts', 'test/**/*-suite.ts'],
    rules: { 'max-lines-per-function': 'off' },
  },
  {
    // Straight-line codecs written by scripts/gen-codecs.mjs from the .proto files.
    files: ['src/**/*.gen.ts'],
    rules: { 'max-lines-per-function': 'off' },
  },
  // Library code logs through pino.
  {
    files: ['src/{raft,coordinator,store,server,client,shared}/**/*.ts'],
    rules: { 'no-console': 'error' },
  },
  // Layers: every import points down (DESIGN.md, "Layers").
  { files: ['src/raft/**/*.ts'], rules: { 'no-restricted-imports': restrict(LAYERS.raft) } },
  {
    files: ['src/raft/core/**/*.ts'],
    rules: {
      'no-restricted-imports': restrict(LAYERS.raft, RAFT_CORE_PACKAGES),
      'no-restricted-globals': ['error', ...IMPURE_GLOBALS],
      'no-restricted-properties': [
        'error',
        ...IMPURE_PROPERTIES,
        { object: 'performance', property: 'now', message: 'the Raft core counts ticks' },
      ],
      'no-restricted-syntax': [
        'error',
        ...IMPURE_SYNTAX,
        { selector: "NewExpression[callee.name='Date']", message: 'the Raft core counts ticks' },
      ],
    },
  },
  {
    files: ['src/coordinator/**/*.ts'],
    rules: {
      'no-restricted-imports': restrict(LAYERS.coordinator, COORDINATOR_PACKAGES),
      'no-restricted-globals': ['error', ...IMPURE_GLOBALS],
      'no-restricted-properties': ['error', ...IMPURE_PROPERTIES],
      'no-restricted-syntax': ['error', ...IMPURE_SYNTAX],
    },
  },
  { files: ['src/store/**/*.ts'], rules: { 'no-restricted-imports': restrict(LAYERS.store) } },
  { files: ['src/client/**/*.ts'], rules: { 'no-restricted-imports': restrict(LAYERS.client) } },
);
