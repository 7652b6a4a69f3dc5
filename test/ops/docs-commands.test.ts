/**
 * Every shell command in README.md and docs/operations.md (```sh and ```bash blocks) works
 * as written:
 *
 *  - each `concord` command (also inside `npx`, `docker run`, `docker compose exec`) names a
 *    subcommand and flags that exist, with its required flags and arguments — checked against
 *    the CLI's own definition, and its `--help` printed by the real binary names each flag;
 *  - the read-only ones (`cluster status`, `tx list`, `tx show`, any `--dry-run`) and every
 *    `curl` RUN against a real three-node cluster (the docs' ports 709N/809N/909N rewritten to
 *    the cluster's, the documented xid to a real one, the token placeholder to the token);
 *  - `npm` commands name scripts that exist; other programs are in a short list, with the
 *    test that covers them. A new command of an unknown kind fails here until it is checked.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command, Option } from 'commander';
import { buildProgram } from '../../src/cli/program.ts';
import type { TcClient } from '../../src/client/tc-client.ts';
import { TestCluster } from '../tc/helpers.ts';
import { REPO_ROOT, runCli } from './helpers.ts';
import { fetchNode } from '../support/node-http.ts';

const DOCS = ['README.md', 'docs/operations.md'];
const TOKEN = 'tc-test-token-0123456789';
/** Programs the docs may use that this test cannot run, and what covers them instead. */
const EXTERNAL: Record<string, string> = {
  docker: 'a container runtime; test/package/container.test.ts checks Dockerfile and compose.yaml',
  openssl: 'makes a token',
};

interface DocCommand {
  file: string;
  line: number;
  text: string;
  env: Record<string, string>;
  argv: string[];
}

/** Shell words: quotes group, `$( … )` is one word, an unquoted `#` starts a comment. */
export function shellWords(line: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'" || c === '"') {
      const end = line.indexOf(c, i + 1);
      if (end < 0) throw new Error(`unclosed quote in: ${line}`);
      cur += line.slice(i + 1, end);
      inWord = true;
      i = end;
    } else if (c === '$' && line[i + 1] === '(') {
      const end = line.indexOf(')', i);
      cur += line.slice(i, end + 1);
      inWord = true;
      i = end;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else if (c === '#' && !inWord) {
      break;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (inWord) words.push(cur);
  return words;
}

function commandsOf(file: string): DocCommand[] {
  const text = readFileSync(join(REPO_ROOT, file), 'utf8');
  const out: DocCommand[] = [];
  for (const block of text.matchAll(/^```(?:sh|bash)\n([\s\S]*?)^```/gm)) {
    const startLine = text.slice(0, block.index).split('\n').length + 1;
    const lines = block[1]!.split('\n');
    for (let i = 0; i < lines.length; i++) {
      let joined = lines[i]!;
      const first = i;
      while (/\\\s*$/.test(joined) && i + 1 < lines.length)
        joined = joined.replace(/\\\s*$/, ' ') + lines[++i]!;
      for (const part of joined.split(/\s&&\s/)) {
        const words = shellWords(part);
        if (words.length === 0) continue;
        const env: Record<string, string> = {};
        while (words.length > 0 && /^[A-Z_][A-Z0-9_]*=/.test(words[0]!)) {
          const w = words.shift()!;
          env[w.slice(0, w.indexOf('='))] = w.slice(w.indexOf('=') + 1);
        }
        out.push({ file, line: startLine + first, text: part.trim(), env, argv: words });
      }
    }
  }
  return out;
}

/** The concord argv inside a command, or null when it runs no concord. */
function concordArgv(argv: string[]): string[] | null {
  if (argv[0] === 'concord') return argv.slice(1);
  if (argv[0] === 'npx' && argv[1] === 'concord') return argv.slice(2);
  if (argv[0] === 'docker') {
    // `docker run … concord <args>`: the image (named last) runs concord with the args;
    // `docker compose exec <service> concord <args>`.
    if (argv[1] === 'run') {
      const image = argv.lastIndexOf('concord');
      return image < 0 || image === argv.length - 1 ? null : argv.slice(image + 1);
    }
    const at = argv.indexOf('concord');
    if (argv[1] === 'compose' && argv[2] === 'exec' && at > 3) return argv.slice(at + 1);
  }
  return null;
}

/**
 * `concord …` command lines in inline code, written out in full: with a flag (a bare
 * `concord tx` names a command, it is no command line) and no `<placeholder>`,
 * `[optional]`, `a|b` or `…`.
 */
export function inlineConcordCommands(markdown: string): string[] {
  return [...markdown.matchAll(/`((?:npx )?concord [^`]+)`/g)]
    .map((m) => m[1]!)
    .filter((c) => / --?[a-z]/.test(c) && !/[<>[\]|…]/.test(c));
}

interface Checked {
  path: string[];
  flags: string[];
  readOnly: boolean;
}

/**
 * Walks the CLI's definition: the subcommand exists, every flag exists, required ones are
 * there.
 */
function checkAgainstProgram(argv: string[]): Checked {
  let cmd: Command = buildProgram();
  const path: string[] = [];
  let i = 0;
  for (; i < argv.length; i++) {
    const sub = cmd.commands.find((c) => c.name() === argv[i]);
    if (!sub) break;
    cmd = sub;
    path.push(argv[i]!);
  }
  const flags: string[] = [];
  const positional: string[] = [];
  const given = new Set<Option>();
  for (; i < argv.length; i++) {
    const w = argv[i]!;
    if (!w.startsWith('-')) {
      positional.push(w);
      continue;
    }
    const flag = w.includes('=') ? w.slice(0, w.indexOf('=')) : w;
    if (flag === '--help' || flag === '-h' || (path.length === 0 && flag === '--version'))
      return { path, flags: [flag], readOnly: true };
    const opt = cmd.options.find((o) => o.long === flag || o.short === flag);
    if (!opt)
      throw new Error(
        `concord ${path.join(' ')} has no flag ${flag} (it has ${cmd.options.map((o) => o.long).join(', ')})`,
      );
    flags.push(opt.long!);
    given.add(opt);
    if ((opt.required || opt.optional) && !w.includes('=')) i++;
  }
  if (cmd.commands.length > 0)
    throw new Error(
      `concord ${path.join(' ')} needs a subcommand (${cmd.commands.map((c) => c.name()).join(', ')})`,
    );
  const required = cmd.registeredArguments.filter((a) => a.required).length;
  if (positional.length < required || positional.length > cmd.registeredArguments.length)
    throw new Error(
      `concord ${path.join(' ')} takes ${cmd.registeredArguments.map((a) => a.name()).join(' ') || 'no arguments'}, given ${positional.length}`,
    );
  for (const o of cmd.options)
    if (o.mandatory && !given.has(o)) throw new Error(`concord ${path.join(' ')} needs ${o.long}`);
  const key = path.join(' ');
  const readOnly =
    ['cluster status', 'tx list', 'tx show'].includes(key) || flags.includes('--dry-run');
  return { path, flags, readOnly };
}

const commands = DOCS.flatMap(commandsOf);
const packageJson = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
  name: string;
  scripts: Record<string, string>;
};

let cluster: TestCluster;
let tc: TcClient;
let xid: string;

/** The docs' addresses (node N: 709N, 809N, 909N) as the test cluster's. */
function localize(word: string): string {
  return word
    .replace(/127\.0\.0\.1:([789])09([123])\b/g, (_m, kind: string, n: string) => {
      const node = cluster.nodes[Number(n) - 1]!;
      const port = kind === '7' ? node.http : kind === '8' ? node.tc : node.raft;
      return `127.0.0.1:${port}`;
    })
    .replace(/^"?\$TOKEN"?$/, TOKEN)
    .replace(/^<token>$/, TOKEN);
}

beforeAll(async () => {
  cluster = await TestCluster.start('docs-commands', { tickMs: 50 });
  tc = cluster.client();
  xid = await tc.begin({
    applicationId: 'docs',
    transactionServiceGroup: 'default',
    name: 'docs',
    timeoutMs: 600_000,
  });
}, 120_000);

afterAll(async () => {
  await tc?.close();
  await cluster?.stop();
}, 60_000);

describe('shell commands in the docs', () => {
  it('were found (the extraction works)', () => {
    expect(commands.length).toBeGreaterThan(20);
    expect(shellWords(`curl 'http://h/x?a=1#b' # note`)).toEqual(['curl', 'http://h/x?a=1#b']);
    expect(shellWords('export T=$(openssl rand -hex 24)')).toEqual([
      'export',
      'T=$(openssl rand -hex 24)',
    ]);
  });

  it('each is of a kind this test checks', () => {
    const unknown = commands.filter((c) => {
      const p = c.argv[0]!;
      return !['npx', 'concord', 'npm', 'curl', 'export', ...Object.keys(EXTERNAL)].includes(p);
    });
    expect(unknown.map((c) => `${c.file}:${c.line}: ${c.text}`)).toEqual([]);
  });

  it('npm commands name scripts that exist, and the package they install is this one', () => {
    for (const c of commands.filter((x) => x.argv[0] === 'npm')) {
      const [, verb, arg] = c.argv;
      const where = `${c.file}:${c.line}: ${c.text}`;
      if (verb === 'run') expect(packageJson.scripts, where).toHaveProperty(arg!);
      else if (verb === 'start' || verb === 'test')
        expect(packageJson.scripts, where).toHaveProperty(verb);
      else if (verb === 'install')
        expect(c.argv.filter((w) => !w.startsWith('-')).at(-1)).toBe(packageJson.name);
      else expect(['ci'], where).toContain(verb);
    }
  });

  const concordCommands = commands
    .map((c) => ({ c, argv: concordArgv(c.argv) }))
    .filter((x): x is { c: DocCommand; argv: string[] } => x.argv !== null);

  it('every concord command names a subcommand, flags and arguments that exist', () => {
    expect(concordCommands.length).toBeGreaterThan(10);
    const errors: string[] = [];
    for (const { c, argv } of concordCommands) {
      try {
        checkAgainstProgram(argv);
      } catch (err) {
        errors.push(`${c.file}:${c.line}: ${c.text}\n    ${(err as Error).message}`);
      }
    }
    expect(errors).toEqual([]);
  });

  it('concord commands written out in the text (no placeholders) are valid too', () => {
    const errors: string[] = [];
    let count = 0;
    for (const file of DOCS) {
      const text = readFileSync(join(REPO_ROOT, file), 'utf8');
      for (const m of inlineConcordCommands(text)) {
        count++;
        try {
          checkAgainstProgram(shellWords(m).slice(m.startsWith('npx ') ? 2 : 1));
        } catch (err) {
          errors.push(`${file}: \`${m}\`: ${(err as Error).message}`);
        }
      }
    }
    expect(count).toBeGreaterThan(3);
    expect(errors).toEqual([]);
  });

  it('the real binary prints the help of each, naming every flag used', async () => {
    const byPath = new Map<string, Set<string>>();
    for (const { argv } of concordCommands) {
      const { path, flags } = checkAgainstProgram(argv);
      const key = path.join(' ');
      const set = byPath.get(key) ?? new Set<string>();
      for (const f of flags) if (f !== '--help' && f !== '--version') set.add(f);
      byPath.set(key, set);
    }
    const entries = [...byPath];
    for (let i = 0; i < entries.length; i += 2) {
      await Promise.all(
        entries.slice(i, i + 2).map(async ([key, flags]) => {
          const r = await runCli([...(key ? key.split(' ') : []), '--help']);
          expect(r.code, `concord ${key} --help\n${r.out}`).toBe(0);
          for (const f of flags) expect(r.out, `concord ${key} --help`).toContain(f);
        }),
      );
    }
  }, 300_000);

  it('the read-only concord commands run against a real cluster', async () => {
    const ran: string[] = [];
    let env: Record<string, string> = {};
    for (const c of commands) {
      if (c.argv[0] === 'export') {
        // export X=… : the docs' placeholder or $(openssl …) is the cluster's token.
        const [name] = c.argv[1]!.split('=');
        env = { ...env, [name!]: TOKEN };
        continue;
      }
      const argv = concordArgv(c.argv);
      if (argv === null || c.argv[0] === 'docker') continue;
      const checked = checkAgainstProgram(argv);
      if (!checked.readOnly || checked.flags.includes('--help')) continue;
      // The documented xid is a real one; the documented addresses the cluster's.
      const args = argv.map((w) => (/^127\.0\.0\.1:8091:\d+$/.test(w) ? xid : localize(w)));
      const r = await runCli(args, {
        env: { CONCORD_HTTP_AUTH_TOKEN: '', ...env, ...c.env },
      });
      expect(r.code, `${c.file}:${c.line}: concord ${args.join(' ')}\n${r.out}`).toBe(0);
      ran.push(checked.path.join(' '));
    }
    // What the docs show of reading a cluster ran: status, list, show, a dry run.
    expect(new Set(ran)).toEqual(new Set(['cluster status', 'tx list', 'tx show', 'cluster add']));
  }, 300_000);

  it('every curl runs against a real cluster and gets a 2xx', async () => {
    const curls = commands.filter((c) => c.argv[0] === 'curl');
    expect(curls.length).toBeGreaterThan(2);
    for (const c of curls) {
      const target = c.argv.slice(1).find((w) => w.startsWith('http'))!;
      // The nodes serve HTTPS (secure by default): the docs' curl trusts the dev CA.
      expect(target.startsWith('https://'), `${c.file}:${c.line}: ${c.text}`).toBe(true);
      expect(c.argv, `${c.file}:${c.line}: ${c.text}`).toContain('--cacert');
      const res = await fetchNode(localize(target), { signal: AbortSignal.timeout(5_000) });
      expect(res.status, `${c.file}:${c.line}: ${c.text}`).toBeGreaterThanOrEqual(200);
      expect(res.status, `${c.file}:${c.line}: ${c.text}`).toBeLessThan(300);
    }
  });
});
