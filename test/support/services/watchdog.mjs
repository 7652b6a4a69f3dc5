// The services' watchdog: started detached (its own process group, so a Ctrl-C of the test
// run does not reach it) with a pipe from the process that started the private databases.
// When that pipe closes without a word (the test run was killed, or exited without its
// teardown), it stops the servers listed in <root>/watchdog.json and removes <root>.
// A normal teardown stops the servers itself, then ends this process.
// Plain JavaScript: node runs it without a loader. Usage: node watchdog.mjs <root>
import { existsSync, readFileSync, rmSync } from 'node:fs';

const root = process.argv[2];
const GRACE_MS = 15_000;
const POLL_MS = 100;

/** Is this pid still one of our servers? (its command line names our temporary root) */
function ours(pid) {
  if (!existsSync('/proc/self')) return alive(pid);
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(root);
  } catch {
    return false;
  }
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function signal(pid, sig) {
  try {
    process.kill(pid, sig);
  } catch {
    // gone already
  }
}

async function cleanUp() {
  let servers = [];
  try {
    servers = JSON.parse(readFileSync(`${root}/watchdog.json`, 'utf8'));
  } catch {
    // nothing was started, or the teardown already removed it
  }
  for (const s of servers) if (ours(s.pid)) signal(s.pid, s.signal);
  const deadline = Date.now() + GRACE_MS;
  while (servers.some((s) => ours(s.pid)) && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  for (const s of servers) if (ours(s.pid)) signal(s.pid, 'SIGKILL');
  rmSync(root, { recursive: true, force: true });
  process.exit(0);
}

if (!root || !root.includes('concord-services-')) process.exit(2);
process.stdin.on('data', () => undefined);
process.stdin.on('end', cleanUp);
process.stdin.on('error', cleanUp);
