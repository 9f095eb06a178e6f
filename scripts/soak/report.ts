/**
 * The soak's report as markdown, pure: the summary table (load held, faults injected, bad inputs
 * tried, violations), then one table per invariant family and the details behind them.
 */
import type { FinalSummary } from "./final.js";
import { INVARIANTS, type Invariant, type Ledger } from "./ledger.js";
import { percentile } from "./catalog.js";
import { SIGNATURES } from "./data-check.js";
import type { ReaderSummary } from "./readers.js";
import type { Convergence } from "./tracker.js";

export interface ReportInput {
  readonly command: string;
  readonly seed: number;
  readonly profile: string;
  readonly date: string;
  readonly host: string;
  /** The commit under test, and whether the product code had uncommitted changes. */
  readonly revision: string;
  readonly loadSeconds: number;
  readonly totalSeconds: number;
  readonly ledger: Ledger;
  readonly converged: readonly Convergence[];
  readonly cleanups: readonly Convergence[];
  readonly final: FinalSummary | undefined;
  readonly readers?: ReaderSummary | undefined;
  readonly cleanup: readonly string[];
  readonly fatal: string | undefined;
  readonly livePodsRange: readonly [number, number];
  readonly maxLive: number;
  readonly boundSeconds: number;
  readonly uploadGraceSeconds: number;
}

const n = (x: number): string => x.toLocaleString("en-US");
const s = (ms: number | undefined): string => (ms === undefined ? "–" : `${(ms / 1000).toFixed(2)} s`);

function latencyRow(label: string, xs: readonly Convergence[]): string {
  const ms = xs.map((x) => x.ms);
  return `| ${label} | ${n(ms.length)} | ${s(percentile(ms, 50))} | ${s(percentile(ms, 99))} | ${s(ms.length ? Math.max(...ms) : undefined)} |`;
}

function countersWith(l: Ledger, prefix: string): Array<[string, number]> {
  return [...l.counters].filter(([k]) => k.startsWith(prefix)).sort((a, b) => a[0].localeCompare(b[0]));
}

export function renderReport(r: ReportInput): string {
  const L = r.ledger;
  const g = (k: string): number => L.get(k);
  const consoleEdits = g("changes.seen.console") + g("changes.seen.unknown");
  const changes = g("changes.flips") + consoleEdits;
  const violations = L.violationCount();
  const badKinds = countersWith(L, "bad.console.").map(([k, v]) => `${k.slice("bad.console.".length)} ×${v}`);
  const fuseKills = countersWith(L, "faults.fuseKills.").map(
    ([k, v]) => `${k.slice("faults.fuseKills.".length)} ${v}`,
  );
  const violationCell =
    violations === 0 && r.fatal === undefined
      ? "**0**"
      : [
          ...[...L.violations].map(([inv, t]) => `**${t.count}** ${inv}`),
          ...(r.fatal !== undefined ? [`harness stopped: ${r.fatal}`] : []),
        ].join("; ");
  const lines: string[] = [];
  lines.push("# Reliability: soak of the agent", "");
  lines.push(
    `Produced by \`${r.command}\` on ${r.date} (${r.host}), product at ${r.revision}. Seed **${r.seed}**, profile **${r.profile}**, ` +
      `load phase ${r.loadSeconds} s, whole run ${r.totalSeconds} s. The same seed gives every actor the same ` +
      "sequence of decisions; how they interleave with the agent depends on timing.",
    "",
  );
  lines.push(
    "What runs: the real mounter (root, in its own Bidirectional mount namespace, running every FUSE client) and " +
      "the real agent (local mode, uid 65532 with no capabilities, in a HostToContainer namespace, with its wss console), " +
      "pods as runc containers admitted through the webhook's patch, real s3fs and rclone clients, and s3rver on " +
      "loopback. See `scripts/soak/` for how every figure below is measured.",
    "",
  );
  lines.push("| | |", "|---|---|");
  lines.push(
    `| **Load held** | ${n(g("pods.created"))} pods created (${n(g("pods.created.s3fs"))} s3fs, ${n(g("pods.created.rclone"))} rclone) and ${n(g("pods.deleted"))} deleted, ` +
      `live set kept within ${r.livePodsRange[0]}–${r.livePodsRange[1]} (max ${r.maxLive}); ` +
      `**${n(changes)} annotation changes** (${n(g("changes.flips"))} by the flipper, ${n(consoleEdits)} by console edits); ` +
      `${n(g("writes.acknowledged") + countersWith(L, "writes.failed.").reduce((a, [, v]) => a + v, 0))} writes from inside containers (${n(g("writes.acknowledged"))} acknowledged); ` +
      `${n(g("isolation.probes"))} isolation probes; console: ${n(g("console.sessions"))} sessions, ${n(g("console.requests"))} requests, ${n(g("console.abruptDisconnects"))} abrupt disconnects; ` +
      `up to ${n(g("fuse.maxClients"))} FUSE clients at once |`,
  );
  lines.push(
    `| **Faults injected** | S3 server killed ${n(g("faults.s3Outages"))}× and restarted on the same port after the outage; ` +
      `agent killed with -9 and restarted ${n(g("faults.agentKills"))}×; ` +
      `mounter killed with -9 together with its FUSE clients (${n(g("faults.mounterKills.clients"))} in all) and restarted ${n(g("faults.mounterKills"))}×; FUSE clients killed with -9 ${n(g("faults.fuseKills"))}× (${fuseKills.join(", ") || "none"}); ` +
      `S3 unreachable (frozen) while an entry with pending writes is removed ${n(g("faults.writeBack.removedWhileUnreachable"))}×; ` +
      `client killed with pending writes ${n(g("faults.writeBack.clientKilled"))}× |`,
  );
  lines.push(
    `| **Bad inputs tried** | ${n(g("bad.annotationEntries"))} malformed \`dynamic-volumes/buckets\` entries; ` +
      `${n(g("bad.console"))} bad console inputs (${badKinds.join(", ") || "none"}) |`,
  );
  lines.push(`| **Violations** | ${violationCell} |`);
  lines.push("");

  lines.push("## Invariants", "", "| invariant | checks | violations |", "|---|---:|---:|");
  for (const inv of Object.keys(INVARIANTS) as Invariant[])
    lines.push(
      `| ${INVARIANTS[inv]} | ${n(L.checks.get(inv) ?? 0)} | ${n(L.violations.get(inv)?.count ?? 0)} |`,
    );
  lines.push("");

  lines.push("## Convergence", "");
  lines.push(
    "Per change: from the write of the annotation to the first sample (every ~200 ms) where the pod's status, " +
      "the host's mountinfo (names, ro/rw, nothing stacked) and the agent's mount records all match it. " +
      "Changes overwritten before they converged are not timed.",
    "",
  );
  lines.push("| | changes | p50 | p99 | worst |", "|---|---:|---:|---:|---:|");
  lines.push(latencyRow("every change that converged", r.converged));
  lines.push(
    latencyRow(
      "… with no S3 outage, agent or mounter downtime in between",
      r.converged.filter((c) => c.clean),
    ),
  );
  lines.push(
    latencyRow(
      "… made through the console",
      r.converged.filter((c) => c.source === "console"),
    ),
  );
  lines.push(latencyRow("pod deleted → mounts, directory and state gone", r.cleanups));
  lines.push("");
  if (g("leak.emptyDirAwaitingGcGrace") > 0)
    lines.push(
      `Pods deleted while the agent was down before it had mounted anything for them: ` +
        `${n(g("leak.emptyDirAwaitingGcGrace"))} empty directories wait for the agent's GC grace (10 min), since ` +
        "the agent cannot tell them from a directory the kubelet created before the agent heard of its pod. " +
        "Counted here, not as leaks; a directory with anything in it, or with agent state, must go at once.",
      "",
    );
  lines.push(
    `Overwritten before converging: ${n(g("changes.superseded"))}; pod deleted before converging: ${n(g("changes.deletedBeforeConverged"))}. ` +
      `After the load stopped, everything matched in ${s(r.final?.settledMs)} (bound ${r.boundSeconds} s); ` +
      `${n(r.final?.mountsChecked ?? 0)} desired mounts then read through each container.`,
    "",
  );

  if (r.final !== undefined) {
    const f = r.final;
    lines.push("## Agent descriptors and memory", "");
    lines.push(
      "Sampled every 2 s from `/proc/<pid>`, after a 20 s warm-up; start = median of the first three samples, " +
        "end = after the load stopped and everything settled. Only the last incarnation lives long enough to judge.",
      "",
    );
    lines.push("| agent pid | ended | lived | fds start / end / max | RSS MiB start / end / max | verdict |");
    lines.push("|---:|---|---:|---|---|---|");
    for (const x of f.resources)
      lines.push(
        `| ${x.pid} | ${x.end} | ${x.seconds} s | ${x.fds ? `${x.fds.start} / ${x.fds.end} / ${x.fds.max}` : "–"} | ` +
          `${x.rssMiB ? `${x.rssMiB.start} / ${x.rssMiB.end} / ${x.rssMiB.max}` : "–"} | ${x.verdict} |`,
      );
    lines.push("");
    lines.push("## Writes", "");
    lines.push(
      "Writers run `dd conv=fsync` inside the containers into mounted rw buckets, so a failed flush reaches their " +
        "exit status. Every write acknowledged with exit 0 must be in S3 with its SHA-256. Each run also has an " +
        "unmount probe per mounter: a pod writes one file, and its annotation drops the mount as soon as the writer " +
        `has exited 0 (probes acknowledged: s3fs ${n(g("probes.unmountAfterWrite.s3fs"))}, rclone ${n(g("probes.unmountAfterWrite.rclone"))}).`,
      "",
    );
    lines.push(
      "| acknowledged | verified in S3 | … of which only after the operator uploaded kept caches | lost | corrupted | landed elsewhere than the marker said | failed (writer saw the error) |",
    );
    lines.push("|---:|---:|---:|---:|---:|---:|---|");
    const failed = countersWith(L, "writes.failed.").map(
      ([k, v]) => `exit ${k.slice("writes.failed.".length)}: ${v}`,
    );
    lines.push(
      `| ${n(f.writes.acknowledged)} | ${n(f.writes.verified)} | ${n(f.writes.recovered)} | ${n(f.writes.lost)} | ${n(f.writes.corrupted)} | ${n(f.writes.misplaced)} | ${failed.join(", ") || "0"} |`,
      "",
    );
    lines.push("### Writes left pending by an unreachable S3", "");
    lines.push(
      "rclone acknowledges a write from its cache and uploads it afterwards. Twice per run, in a pod of a namespace " +
        "whose Secret points at an S3 server of its own, that server is frozen (SIGSTOP: connections stay open, nothing " +
        "is answered) after the pod has created a 16 MiB file and before it closes it, so that the upload cannot finish " +
        "(16 MiB is more than the loopback socket buffers take in). Then " +
        `either the entry is removed (the agent waits out its upload grace, ${r.uploadGraceSeconds} s here, and stops the client) and ` +
        "added back once S3 answers, or the client is killed with -9 and S3 stays frozen until the agent has replaced " +
        "it. The agent must keep the cache, say so with a `WriteBackPending` Warning, and the next mount must upload " +
        "the write. Unmounts that give up on pending uploads during the S3 outage are held to the same rule. At the end " +
        "the soak plays the operator of docs/troubleshooting.md: it uploads what caches kept for gone pods or removed " +
        "entries still hold, and every such cache must have been announced.",
      "",
    );
    lines.push("| | |", "|---|---:|");
    lines.push(`| entry removed while S3 was frozen | ${n(g("faults.writeBack.removedWhileUnreachable"))} |`);
    lines.push(
      `| … the write was still pending when the client was stopped (not in S3 after S3 resumed) | ${n(g("writeBack.remove.pendingConfirmed"))} |`,
    );
    lines.push(`| client killed with a pending write | ${n(g("faults.writeBack.clientKilled"))} |`);
    lines.push(
      `| writes of these faults acknowledged (close returned 0) | ${n(g("writeBack.writesAcknowledged"))} |`,
    );
    lines.push(
      `| … in S3 with their SHA-256 at the end, uploaded by the mount made again | ${n(g("writeBack.faultWritesVerified"))} |`,
    );
    lines.push(
      `| caches still kept at the end (announced and uploaded by the operator) | ${n(g("writeBack.keptCachesAtEnd"))} |`,
    );
    lines.push(
      `| objects the operator uploaded from them | ${n(g("writeBack.objectsUploadedByOperator"))} |`,
    );
    lines.push(
      `| invariant checks (event present, kept cache announced, fault write uploaded by the next mount) | ${n(L.checks.get("writeBack") ?? 0)} |`,
      "",
    );
    if (f.logErrors.size > 0) {
      lines.push("## Agent error-level log lines (expected under faults; not violations)", "");
      lines.push("| message | count |", "|---|---:|");
      for (const [msg, c] of [...f.logErrors].sort((a, b) => b[1] - a[1])) lines.push(`| ${msg} | ${n(c)} |`);
      lines.push("");
    }
  }

  if (r.readers !== undefined) {
    const x = r.readers;
    lines.push("## Agent and mounter kills: what a running pod sees", "");
    lines.push(
      "The FUSE clients run in the mounter, so an agent kill must leave every mount as it was. Right before each agent " +
        `kill the soak asks the mounter for its clients, and again ${n(6)} s after the agent is back: a client of a mount ` +
        "that is still wanted and was not edited, converging or killed meanwhile must be the same process. A mounter kill " +
        "takes every client with it (as the end of its container would): the mounts go stale until the agent, which " +
        "reconnects by itself, makes them again.",
      "",
    );
    lines.push(
      `Long-lived readers: ${n(x.readers)} processes inside the containers of ${n(x.pods)} pods whose annotation never changes ` +
        "(no flipper, console edit, writer or FUSE kill touches them) hold `marker.txt` of a mount open and read it in a " +
        "loop, through the held descriptor and with a fresh `cat`, every ~100 ms. An error within a fault window (or " +
        "30 s after a mounter kill or S3 outage, 10 s after an agent kill) belongs to that fault; after an error a reader " +
        "opens its file again, since a dead client's descriptor never works again.",
      "",
    );
    lines.push("| | |", "|---|---:|");
    lines.push(
      `| agent kills: mounts compared / same FUSE client after / not comparable (edited, converging, client killed) | ${n(L.checks.get("agentKill") ?? 0)} / ${n(g("agentKill.identity.sameClient"))} / ${n(g("agentKill.identity.skipped") + g("agentKill.identity.skippedS3Outage"))} |`,
    );
    lines.push(
      `| reader iterations (each a held-descriptor read and a fresh \`cat\`) | ${n(x.iterations)} |`,
    );
    lines.push(`| read errors across agent kills (must be 0) | **${n(x.errors.agent)}** |`);
    lines.push(`| read errors across mounter kills (expected: the clients died) | ${n(x.errors.mounter)} |`);
    lines.push(`| read errors across the S3 outage (reported) | ${n(x.errors.s3)} |`);
    lines.push(`| read errors with no fault around (must be 0) | **${n(x.errors.none)}** |`);
    lines.push(
      `| … iterations where the held descriptor's read failed / the fresh \`cat\` failed | ${n(x.heldErrors)} / ${n(x.freshErrors)} |`,
    );
    lines.push(`| files opened again after an error of the held descriptor | ${n(x.reopens)} |`);
    lines.push(
      `| readers that read again after a mounter kill, of all (mounter kills × readers) | ${n(x.recovered)} of ${n(x.recoveries)} |`,
    );
    lines.push(
      `| … worst time from the mounter's restart to the reader's first good read | ${s(x.worstRecoveryMs)} |`,
    );
    lines.push(`| longest gap between a reader's heartbeats (every 20 iterations) | ${s(x.maxBeatGapMs)} |`);
    const stall = (k: keyof ReaderSummary["stalls"]): string =>
      x.stalls[k].count === 0 ? "0" : `${n(x.stalls[k].count)} (longest ${s(x.stalls[k].longestMs)})`;
    lines.push(
      `| stalls (reads that hung over 8 s rather than failed) across agent kills / mounter kills / the S3 outage / no fault | ${stall("agent")} / ${stall("mounter")} / ${stall("s3")} / ${stall("none")} |`,
    );
    lines.push("");
  }

  if (L.signatures.size > 0) {
    lines.push("## Violations that match a known failure signature", "");
    for (const [sig, t] of L.signatures) lines.push(`- **${sig}** (${t.count}): ${SIGNATURES[sig] ?? ""}`);
    lines.push("");
  }

  if (violations > 0) {
    lines.push("## Violations", "");
    for (const [inv, t] of L.violations) {
      lines.push(`### ${inv} (${t.count})`, "");
      for (const e of t.examples) lines.push(`- ${e}`);
      if (t.count > t.examples.length) lines.push(`- … and ${t.count - t.examples.length} more`);
      lines.push("");
    }
  }

  lines.push("## Other figures", "");
  const shown = [...L.counters].sort((a, b) => a[0].localeCompare(b[0]));
  lines.push("| counter | value |", "|---|---:|");
  for (const [k, v] of shown) lines.push(`| ${k} | ${n(v)} |`);
  lines.push("");
  lines.push("## Harness", "");
  lines.push(`Errors of the soak itself (not the product's): ${n(L.harness.count)}.`);
  for (const e of L.harness.examples) lines.push(`- ${e}`);
  lines.push("", `Cleanup: ${r.cleanup.join("; ")}.`, "");
  return lines.join("\n");
}
