/**
 * The operation commands (`ls`, `status`, `mount`, `umount`, `watch`) as commander commands, defined
 * once for the command line and for `dvctl console`, so that both parse the same way. Each action
 * turns its arguments into an {@link Operation} (throwing UsageError) and hands it to `run`.
 */
import type { Command } from "commander";
import { buildMountRequest, buildUnmountRequest, parseNamespace, parsePodRef } from "./args.js";
import { UsageError } from "./errors.js";
import type { Operation } from "./operations.js";

export function addOperationCommands(program: Command, run: (op: Operation) => Promise<void>): void {
  program
    .command("ls")
    .alias("list")
    .description(
      "list pods with their mounts (STATE, AGE): without --agent/--node, every injected pod from the Kubernetes API (the fleet view, with NODE); with them, the pods on that agent's node",
    )
    .option(
      "-n, --namespace <ns>",
      "only pods in this namespace (fleet view default: the kubeconfig context's)",
    )
    .option("-A, --all-namespaces", "pods in every namespace")
    .option("-l, --selector <selector>", "only pods with these labels, as kubectl -l (fleet view only)")
    .action(async (o: { namespace?: string; allNamespaces?: boolean; selector?: string }) => {
      const namespace = o.namespace !== undefined ? parseNamespace(o.namespace) : undefined;
      if (namespace !== undefined && o.allNamespaces === true)
        throw new UsageError("ls: -n and -A exclude each other");
      // eslint-disable-next-line no-control-regex
      if (o.selector !== undefined && (o.selector.length > 1024 || /[\u0000-\u001f]/.test(o.selector)))
        throw new UsageError("ls: -l/--selector is not a label selector");
      await run({
        kind: "ls",
        ...(namespace !== undefined ? { namespace } : {}),
        ...(o.allNamespaces === true ? { allNamespaces: true } : {}),
        ...(o.selector !== undefined ? { selector: o.selector } : {}),
      });
    });

  program
    .command("status")
    .description("show one pod's mounts")
    .argument("<NS/POD>", "the pod, e.g. team-a/trainer-0")
    .action(async (ref: string) => run({ kind: "status", ref: parsePodRef(ref) }));

  program
    .command("mount")
    .description(
      "mount a bucket into a running pod (edits its dynamic-volumes/buckets annotation) and wait until it is mounted or failed; progress goes to stderr",
    )
    .argument("<NS/POD>", "the pod")
    .argument("<BUCKET[/PREFIX]>", "the bucket, optionally a key prefix inside it")
    .option("--name <name>", "mount name: the directory under the pod's mount path (default: the bucket)")
    .option("--ro", "read-only")
    .option(
      "--replace",
      "replace a different mount of that name (without it, an existing name is a Conflict that shows it)",
    )
    .option("--timeout <seconds>", "how long the agent may take, 1-3600 (default 60)")
    .action(
      async (
        target: string,
        source: string,
        o: { name?: string; ro?: boolean; replace?: boolean; timeout?: string },
      ) =>
        run({
          kind: "mount",
          req: buildMountRequest({
            target,
            source,
            ...(o.name !== undefined ? { name: o.name } : {}),
            readOnly: o.ro === true,
            replace: o.replace === true,
            ...(o.timeout !== undefined ? { timeout: o.timeout } : {}),
          }),
        }),
    );

  program
    .command("umount")
    .alias("unmount")
    .description("unmount a bucket from a running pod and wait until it is gone")
    .argument("<NS/POD>", "the pod")
    .argument("<NAME>", "the mount name")
    .option("--timeout <seconds>", "how long the agent may take, 1-3600 (default 60)")
    .action(async (target: string, name: string, o: { timeout?: string }) =>
      run({
        kind: "umount",
        req: buildUnmountRequest({
          target,
          name,
          ...(o.timeout !== undefined ? { timeout: o.timeout } : {}),
        }),
      }),
    );

  program
    .command("watch")
    .description("print the mounts, then every state change, until Ctrl-C")
    .argument("[POD]", "only this pod: NS/POD, or POD with -n")
    .option("-n, --namespace <ns>", "only pods in this namespace")
    .action(async (pod: string | undefined, o: { namespace?: string }) => {
      const namespace = o.namespace !== undefined ? parseNamespace(o.namespace) : undefined;
      if (pod === undefined)
        return run({ kind: "watch", req: { op: "watch", ...(namespace ? { namespace } : {}) } });
      if (!pod.includes("/") && namespace === undefined)
        throw new UsageError(`watch ${pod.slice(0, 60)}: give the pod as NS/POD, or its namespace with -n`);
      const ref = parsePodRef(pod, namespace);
      if (namespace !== undefined && ref.namespace !== namespace)
        throw new UsageError(
          `watch: -n ${namespace} and ${ref.namespace}/${ref.pod} name different namespaces`,
        );
      return run({ kind: "watch", req: { op: "watch", ...ref } });
    });
}
