/**
 * The container files agree with each other and with the config loader (this machine has
 * no container runtime; .ci/run builds and runs the image where one exists): every node
 * config of compose.yaml and the image's default config load, the ports compose publishes
 * and the health check's port are the node's own, the peers are the same on every node,
 * and everything the Dockerfile copies from the build context exists and is not excluded
 * by .dockerignore.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfig } from '../../src/server/config.ts';
import { REPO_ROOT } from '../ops/helpers.ts';

const TOKEN_ENV = { CONCORD_HTTP_AUTH_TOKEN: 'a-token-of-at-least-16-chars' };

interface ComposeService {
  hostname: string;
  command: string[];
  environment: Record<string, string>;
  volumes: string[];
  ports: string[];
}

const compose = parse(readFileSync(join(REPO_ROOT, 'compose.yaml'), 'utf8'), { merge: true }) as {
  services: Record<string, ComposeService>;
  volumes: Record<string, unknown>;
};
const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');

/** The host file compose mounts at the container path `target`. */
function mountOf(service: ComposeService, target: string): string {
  const v = service.volumes.find((m) => m.split(':')[1] === target);
  expect(v, `a volume mounted at ${target}`).toBeDefined();
  return v!.split(':')[0]!;
}

describe('compose.yaml: a three-node cluster', () => {
  const names = Object.keys(compose.services);

  it('has three nodes, each with its own data volume', () => {
    expect(names).toEqual(['node1', 'node2', 'node3']);
    const volumes = names.map((n) => mountOf(compose.services[n]!, '/data'));
    expect(new Set(volumes).size).toBe(3);
    for (const v of volumes) expect(Object.keys(compose.volumes)).toContain(v);
  });

  it('gives each node a config that loads, advertises its service name, and publishes its ports', () => {
    const peerLists: unknown[] = [];
    for (const name of names) {
      const svc = compose.services[name]!;
      const configPath = svc.command[svc.command.indexOf('--config') + 1]!;
      const file = join(REPO_ROOT, mountOf(svc, configPath));
      const config = loadConfig(file, TOKEN_ENV, '/');
      expect(config.node.id).toBe(name);
      expect(svc.hostname).toBe(name);
      expect(config.server.advertiseHost).toBe(name);
      expect(config.server.host).toBe('0.0.0.0');
      expect(config.raft.dataDir).toBe('/data');
      expect(Number(svc.environment.CONCORD_HEALTH_PORT)).toBe(config.server.httpPort);
      expect(svc.environment.CONCORD_HTTP_AUTH_TOKEN).toMatch(/CONCORD_HTTP_AUTH_TOKEN/);
      const published = svc.ports.map((p) => p.split(':').slice(-2).map(Number));
      expect(published).toEqual([
        [config.server.httpPort, config.server.httpPort],
        [config.server.tcPort, config.server.tcPort],
      ]);
      expect(config.raft.peers.map((p) => p.host)).toEqual(names);
      peerLists.push(config.raft.peers);
    }
    expect(peerLists[1]).toEqual(peerLists[0]);
    expect(peerLists[2]).toEqual(peerLists[0]);
  });
});

describe('Dockerfile', () => {
  it('runs as a non-root user, with a data volume and a health check on /health', () => {
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/^VOLUME \["\/data", "\/pki"\]$/m);
    expect(dockerfile).toMatch(/^HEALTHCHECK .*\n.*\/health/m);
    expect(dockerfile.match(/^FROM /gm)!.length).toBeGreaterThanOrEqual(2);
  });

  it('has a default config that loads, on the health check’s port', () => {
    const config = loadConfig(join(REPO_ROOT, 'docker/standalone.yaml'), {}, '/');
    expect(config.raft.dataDir).toBe('/data');
    expect(dockerfile).toContain(`CONCORD_HEALTH_PORT=${config.server.httpPort}`);
    for (const port of [config.server.httpPort, config.server.tcPort, config.server.raftPort])
      expect(dockerfile).toMatch(new RegExp(`^EXPOSE .*\\b${port}\\b`, 'm'));
  });

  it('copies only what exists and what .dockerignore lets through', () => {
    const allowed = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('!'))
      .map((l) => l.slice(1).replace(/\/$/, ''));
    const sources = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) =>
      m[1]!.split(/\s+/).map((s) => s.replace(/\/$/, '')),
    );
    expect(sources.length).toBeGreaterThan(5);
    for (const s of sources) {
      expect(existsSync(join(REPO_ROOT, s)), `${s} exists`).toBe(true);
      expect(
        allowed.some((a) => s === a || s.startsWith(`${a}/`)),
        `${s} passes .dockerignore`,
      ).toBe(true);
    }
  });
});
