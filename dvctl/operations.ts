/**
 * What each dvctl command does once it has a console connection: send the request, print the
 * result (tables, or `-o json`), and throw what decides the exit code. Shared by the one-shot
 * commands and `dvctl console`.
 */
import { AppError } from "../shared/errors.js";
import {
  ConsoleError,
  type MountRequest,
  type MountSummary,
  type StateEvent,
  type UnmountRequest,
  type WatchRequest,
} from "../shared/protocol.js";
import type { OutputFormat, PodRef, Unnumbered } from "./args.js";
import type { DvctlClient } from "./client.js";
import { UsageError } from "./errors.js";
import {
  WatchTable,
  formatJson,
  formatJsonLine,
  formatList,
  formatMountResult,
  formatAge,
  formatProgress,
  formatStatus,
  formatTable,
  sourceOf,
  formatUnmountResult,
} from "./format.js";

/** A parsed command, ready to send. */
export type Operation =
  | {
      readonly kind: "ls";
      readonly namespace?: string;
      readonly allNamespaces?: boolean;
      /** A label selector: the fleet view only (the agent's `list` has none). */
      readonly selector?: string;
    }
  | { readonly kind: "status"; readonly ref: PodRef }
  | { readonly kind: "mount"; readonly req: Unnumbered<MountRequest> }
  | { readonly kind: "umount"; readonly req: Unnumbered<UnmountRequest> }
  | { readonly kind: "watch"; readonly req: Unnumbered<WatchRequest> };

/** `ls -l` asked of an agent, whose `list` has no label selector. */
export function lsSelectorNeedsFleet(): UsageError {
  return new UsageError(
    "ls -l works in the fleet view only, which reads the Kubernetes API: drop --agent and --node",
  );
}

/** The pod an operation is about, for discovery; undefined for node-wide ones. */
export function podOf(op: Operation): PodRef | undefined {
  switch (op.kind) {
    case "ls":
      return undefined;
    case "status":
      return op.ref;
    case "mount":
    case "umount":
      return { namespace: op.req.namespace, pod: op.req.pod };
    case "watch":
      return op.req.pod !== undefined && op.req.namespace !== undefined
        ? { namespace: op.req.namespace, pod: op.req.pod }
        : undefined;
  }
}

export interface OperationContext {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly output: OutputFormat;
  readonly now: () => Date;
  /** Ends a `watch` (Ctrl-C), or stops waiting for a `mount`/`unmount`. */
  readonly signal?: AbortSignal;
  /** A failed mount shows the FUSE client's output too. */
  readonly verbose?: boolean;
}

/** Runs `op` on `client`; resolves when it succeeded, throws what maps to the exit code. */
export async function execute(client: DvctlClient, op: Operation, ctx: OperationContext): Promise<void> {
  const json = ctx.output === "json";
  const signal = ctx.signal !== undefined ? { signal: ctx.signal } : {};
  switch (op.kind) {
    case "ls": {
      if (op.selector !== undefined) throw lsSelectorNeedsFleet();
      const list = await client.request({
        op: "list",
        ...(op.namespace !== undefined ? { namespace: op.namespace } : {}),
      });
      if (json) ctx.stdout.write(formatJson(list));
      else {
        const out = formatList(list, ctx.now());
        if (out.table !== undefined) ctx.stdout.write(out.table);
        if (out.empty !== undefined) ctx.stderr.write(out.empty);
      }
      return;
    }
    case "status": {
      const pod = await client.request({ op: "status", ...op.ref });
      ctx.stdout.write(json ? formatJson(pod) : formatStatus(pod, ctx.now()));
      return;
    }
    case "mount": {
      const where = `${op.req.namespace}/${op.req.pod}`;
      let r;
      try {
        r = await client.request(op.req, {
          ...signal,
          onProgress: (p) => ctx.stderr.write(formatProgress(where, p)),
        });
      } catch (e) {
        throw op.req.replace === true ? e : await withExistingMount(client, op.req, e, ctx.now());
      }
      ctx.stdout.write(json ? formatJson(r) : formatMountResult(r, ctx.verbose === true));
      // A failed mount is a result, not a protocol error: the exit code still says it failed. Its
      // reason was printed just above (or is in the JSON), so it is not repeated.
      if (r.mount.state !== "mounted")
        throw new AppError("MountFailed", `mount ${r.mount.name} of ${where} is ${r.mount.state}`);
      return;
    }
    case "umount": {
      const where = `${op.req.namespace}/${op.req.pod}`;
      const r = await client.request(op.req, {
        ...signal,
        onProgress: (p) => ctx.stderr.write(formatProgress(where, p)),
      });
      ctx.stdout.write(json ? formatJson(r) : formatUnmountResult(r));
      return;
    }
    case "watch":
      return watch(client, op.req, ctx);
  }
}

/**
 * Prints the snapshot, then every state change, until `ctx.signal` fires (a clean end) or the
 * connection is lost (an error). With `-o json`, one JSON document per line: the snapshot, then events.
 */
async function watch(
  client: DvctlClient,
  req: Unnumbered<WatchRequest>,
  ctx: OperationContext,
): Promise<void> {
  const json = ctx.output === "json";
  let table: WatchTable | undefined;
  let ready = false;
  // Events can arrive in the same read as the snapshot's reply, before the snapshot is printed.
  const early: StateEvent[] = [];
  const print = (e: StateEvent): void => {
    if (!ready) early.push(e);
    else ctx.stdout.write(json ? formatJsonLine(e) : table!.row(e));
  };
  const snapshot = await client.watch(req, print);
  if (json) ctx.stdout.write(formatJsonLine(snapshot));
  else {
    table = new WatchTable(snapshot, ctx.now());
    ctx.stdout.write(table.header + table.snapshotRows);
  }
  ready = true;
  for (const e of early.splice(0)) print(e);
  await new Promise<void>((resolve, reject) => {
    if (ctx.signal?.aborted) return resolve();
    const off = client.onClose((why) => {
      ctx.signal?.removeEventListener("abort", onAbort);
      reject(why);
    });
    const onAbort = (): void => {
      off();
      resolve();
    };
    ctx.signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * A mount refused because its name is taken: the agent's Conflict (which quotes the annotation's
 * entry), with that mount as it is now (state, age, error) from `status`, and the way to replace
 * it. Any other error, or a status that cannot be read, is passed on as it came.
 */
async function withExistingMount(
  client: DvctlClient,
  req: Unnumbered<MountRequest>,
  e: unknown,
  now: Date,
): Promise<unknown> {
  if (!(e instanceof ConsoleError) || e.code !== "Conflict") return e;
  const name = req.name ?? req.bucket;
  let existing: MountSummary | undefined;
  try {
    const pod = await client.request({ op: "status", namespace: req.namespace, pod: req.pod });
    existing = pod.mounts.find((m) => m.name === name);
  } catch {
    // The Conflict says enough on its own.
  }
  if (existing === undefined) return e;
  const row = formatTable(
    ["NAME", "STATE", "SOURCE", "ACCESS", "PATH", "AGE", "MESSAGE"],
    [
      [
        existing.name,
        existing.state,
        sourceOf(existing),
        existing.readOnly ? "ro" : "rw",
        existing.path,
        formatAge(existing.since, now),
        existing.error ?? "",
      ],
    ],
  );
  const hint = /--replace/.test(e.message) ? "" : "\nGive --replace to replace it.";
  return new ConsoleError("Conflict", `${e.message}${hint}\nThe existing mount:\n${row.trimEnd()}`);
}
