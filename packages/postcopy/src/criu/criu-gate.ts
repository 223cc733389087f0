// `runc checkpoint --lazy-pages` runs CRIU three times, each a `criu swrk` over a socket: VERSION,
// FEATURE_CHECK (lazy pages), then DUMP, which freezes the container. runc's start and the first two
// take ~0.1 s, all before the freeze. Given to runc as its --criu, the gate below runs the real criu
// at once for any request but the one it holds; that one waits until it is told to go. So a
// migration starts `runc checkpoint` while the container still runs (its downtime starts at CRIU's
// own freeze), and `runc restore` before the images are there (it needs only runc's
// descriptors.json, which `runc checkpoint` writes before its DUMP).
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { criuRootDir } from './root.js';
import { freezeCgroupShell, thawCgroupShell } from './runc.js';

/** The gate's file names in the dump's work directory (the fifo, and the file that says a DUMP waits). */
export const GATE_FIFO = 'criu-gate.fifo';
export const GATE_HELD = `${GATE_FIFO}.held`;
const GATE_SCRIPT_NAME = 'criu-gate';

/** The requests a gate holds: criu_req_type in CRIU's images/rpc.proto. */
export enum GatedRequest {
  DUMP = 1,
  RESTORE = 2,
}

/**
 * Perl (Debian's perl-base is essential, and it is in the managed root). A criu_req starts with its
 * type: field 1, a varint (tag byte 0x08). The request is only peeked at: the real criu reads it.
 */
const GATE_SCRIPT = `#!/usr/bin/perl
# postcopy's criu gate for runc --criu: see src/criu/criu-gate.ts.
use strict;
use warnings;
use Socket;
my $gate = $ENV{POSTCOPY_CRIU_GATE};
my $held = $ENV{POSTCOPY_CRIU_GATE_REQUEST} // '';
if (defined $gate && $held =~ /^\\d+$/ && @ARGV == 2 && $ARGV[0] eq 'swrk' && $ARGV[1] =~ /^\\d+$/ && open(my $sk, '+<&', $ARGV[1])) {
  my $head = '';
  if (defined recv($sk, $head, 2, MSG_PEEK) && $head eq pack('CC', 8, $held)) {
    # Read-write: the open never blocks. A line comes: go, or anything else to give up. If runc
    # (the parent) goes meanwhile, so does the gate.
    my $parent = getppid();
    open(my $fifo, '+<', $gate) or die "criu gate: $gate: $!\\n";
    if (open(my $mark, '>', "$gate.held")) { close($mark); }
    my ($line, $rin) = ('', '');
    vec($rin, fileno($fifo), 1) = 1;
    while ($line !~ /\\n/) {
      my $ready = select(my $rout = $rin, undef, undef, 0.5);
      exit 1 if getppid() != $parent;
      next unless $ready > 0;
      sysread($fifo, my $buf, 64) or exit 1;
      $line .= $buf;
    }
    exit 1 unless $line eq "go\\n";
  }
  close($sk);
}
exec { 'criu' } 'criu', @ARGV or die "criu gate: cannot run criu: $!\\n";
`;

/** Whether the CRIU root has the perl the gate needs. */
export function gateUsable(): boolean {
  return existsSync(join(criuRootDir(), 'usr/bin/perl'));
}

/** Writes the gate into a dump's work directory (its path on this host); returns its path as runc in the root sees it. */
export function writeGate(hostWorkDir: string, workDir: string): string {
  const path = join(hostWorkDir, GATE_SCRIPT_NAME);
  writeFileSync(path, GATE_SCRIPT);
  chmodSync(path, 0o755);
  return `${workDir}/${GATE_SCRIPT_NAME}`;
}

/**
 * Shell lines, in the CRIU root, that start `command` (runc, given the gate as its --criu) at once
 * and hold its `request` at the gate: they make the gate's fifo in dir, start the command (D: its
 * pid; `after`: lines run then), wait until the request waits at the gate, then say `armed`, read
 * `go` and open the gate. A command that ends before its request reaches the gate says
 * `NAME exit N` and no `armed`. `beforeGo`: a command run on go, before the gate opens (if it
 * fails, the shell gives up). `end`: the lines after the gate opened; `onGiveUp`: after the command
 * ended for want of go.
 */
export function behindGate(o: { dir: string; request: GatedRequest; name: string; command: string; before?: string[]; after?: string[]; beforeGo?: string; end: string[]; onGiveUp?: string[] }): string[] {
  // Opened read-write, so that this never blocks (a gate that died); what is written stays there
  // until the gate reads it, for as long as this shell lives.
  const tell = (word: string) => `exec 7<>${GATE_FIFO}; echo ${word} >&7`;
  const giveUp = [tell('abort'), 'kill $D 2>/dev/null; wait $D', ...(o.onGiveUp ?? []), `echo "${o.name} exit 1 (it gave up at the gate)"`, 'exit 1'].join('; ');
  return [
    `cd ${o.dir} && rm -f ${GATE_FIFO} ${GATE_HELD} && mkfifo ${GATE_FIFO}`,
    `export POSTCOPY_CRIU_GATE=${o.dir}/${GATE_FIFO} POSTCOPY_CRIU_GATE_REQUEST=${o.request}`,
    ...(o.before ?? []),
    `${o.command} &`,
    'D=$!',
    ...(o.after ?? []),
    `i=0; until [ -e ${GATE_HELD} ]; do kill -0 $D 2>/dev/null || break; i=$((i+1)); [ $i -lt 12000 ] || break; sleep 0.005; done`,
    `[ -e ${GATE_HELD} ] || { kill $D 2>/dev/null; wait $D; echo "${o.name} exit $?"; exit 0; }`,
    // No go (the agent is gone: its pipe ended): the request never reaches criu, runc ends.
    `echo armed; read -r go; [ "$go" = go ]${o.beforeGo ? ` && ${o.beforeGo}` : ''} || { ${giveUp}; }`,
    tell('go'),
    ...o.end,
  ];
}

/**
 * A lazy checkpoint started before its freeze: behindGate with CRIU's status fifo `st` (the command
 * gives CRIU `--status-fd 9`, fd 9 on `st`), saying `ready` once CRIU's status byte came, then
 * `dump exit N`. dir's subdirectories `dirs` are made first. With the container's `cgroup`, it is
 * frozen on go, before the gate opens.
 */
export function checkpointBehindGate(dir: string, dirs: string[], command: string, after: string[] = [], cgroup: string | null = null): string[] {
  return [
    `mkdir -p ${dirs.map((d) => `${dir}/${d}`).join(' ')} && cd ${dir} && rm -f st && mkfifo st`,
    ...behindGate({
      dir,
      request: GatedRequest.DUMP,
      name: 'dump',
      // The status fifo's reader first: the command's `9>st` opens only once it has one.
      before: ['{ [ "$(head -c1 | wc -c)" = 1 ] && echo ready; } < st &'],
      command: `${command} 9>st`,
      after,
      // The container's cgroup frozen on go, so that CRIU takes it frozen at once (freezeCgroupShell);
      // a dump that fails leaves it frozen: thawed here.
      ...(cgroup ? { beforeGo: freezeCgroupShell(cgroup) } : {}),
      end: [`wait $D; r=$?; ${cgroup ? `[ $r = 0 ] || ${thawCgroupShell(cgroup)}; ` : ''}echo "dump exit $r"`],
    }),
  ];
}
