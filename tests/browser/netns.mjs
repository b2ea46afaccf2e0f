// A network namespace of the test's own for the server (a veth to the host, 10.233.<k>.0/24),
// and a rate limit on what the server sends to some UDP ports: HTB on the namespace's end of
// the veth with a 25 kB queue, a narrow access link (as `Shaper` in tests/e2e/test_quality.py).
// Needs root. The names (`pylb…`) and subnets differ from the Python suite's (`pylt…`,
// 10.231/10.232), but neither suite expects the other running beside it.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

const NFT = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'].find((p) => fs.existsSync(p)) ?? 'nft';

function run(cmd, args, { check = true } = {}) {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  } catch (e) {
    if (check) throw new Error(`${cmd} ${args.join(' ')}: ${e.stderr?.toString() ?? e.message}`);
    return null;
  }
}

export const isRoot = () => process.getuid?.() === 0;

/**
 * Namespace `pylb-<tag>` (tag: a few letters; `k` picks the subnet), the server reached at
 * `host`. `remove()` deletes it (and the veth with it).
 */
export function serverNamespace(tag, k = 1) {
  const name = `pylb-${tag}`;
  const outside = `pylb${tag}h`;
  const inside = `pylb${tag}r`;
  const host = `10.233.${k}.2`;
  const ns = (...args) => run('ip', ['netns', 'exec', name, ...args]);
  // A namespace a killed run left behind.
  run('ip', ['netns', 'del', name], { check: false });
  run('ip', ['link', 'del', outside], { check: false });
  run('ip', ['netns', 'add', name]);
  run('ip', ['link', 'add', outside, 'type', 'veth', 'peer', 'name', inside]);
  run('ip', ['link', 'set', inside, 'netns', name]);
  run('ip', ['addr', 'add', `10.233.${k}.1/24`, 'dev', outside]);
  run('ip', ['link', 'set', outside, 'up']);
  ns('ip', 'addr', 'add', `${host}/24`, 'dev', inside);
  ns('ip', 'link', 'set', inside, 'up');
  ns('ip', 'link', 'set', 'lo', 'up');
  const tc = (args, opts) => run('ip', ['netns', 'exec', name, 'tc', ...args], opts);
  return {
    name,
    host,
    /** What the server sends to `ports` (UDP or TCP destination ports) at `kbit` kbit/s. */
    limit(kbit, ports) {
      this.lift();
      tc(['qdisc', 'add', 'dev', inside, 'root', 'handle', '1:', 'htb', 'default', '1']);
      tc(['class', 'add', 'dev', inside, 'parent', '1:', 'classid', '1:1', 'htb', 'rate', '10gbit']);
      tc(['class', 'add', 'dev', inside, 'parent', '1:', 'classid', '1:2', 'htb', 'rate', `${kbit}kbit`]);
      tc(['qdisc', 'add', 'dev', inside, 'parent', '1:2', 'handle', '20:', 'bfifo', 'limit', '25000']);
      for (const port of ports) {
        tc(['filter', 'add', 'dev', inside, 'parent', '1:', 'protocol', 'ip', 'prio', '1',
          'u32', 'match', 'ip', 'dport', String(port), '0xffff', 'flowid', '1:2']);
      }
    },
    lift() {
      tc(['qdisc', 'del', 'dev', inside, 'root'], { check: false });
    },
    /** Drop `percent` % of the UDP datagrams of more than `bytes` bytes that reach the server
     * (media, not RTCP): loss on the publishers' uplinks. */
    uplinkLoss(percent, bytes) {
      const rules = [
        'table inet pylb_loss {',
        '  chain input {',
        '    type filter hook input priority 0; policy accept;',
        `    meta l4proto udp meta length > ${bytes} numgen random mod 100 < ${percent} counter drop`,
        '  }',
        '}',
        '',
      ].join('\n');
      execFileSync('ip', ['netns', 'exec', name, NFT, '-f', '-'], { input: rules, stdio: ['pipe', 'pipe', 'pipe'] });
    },
    /** Datagrams [`uplinkLoss`] dropped so far. */
    uplinkDropped() {
      const out = run('ip', ['netns', 'exec', name, NFT, 'list', 'table', 'inet', 'pylb_loss'], { check: false }) ?? '';
      return Number(/packets (\d+)/.exec(out)?.[1] ?? 0);
    },
    remove() {
      run('ip', ['netns', 'del', name], { check: false });
      run('ip', ['link', 'del', outside], { check: false });
    },
  };
}
