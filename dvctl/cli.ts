/**
 * dvctl's command line: global flags (each with a `DV_*` environment variable, as the agent's and
 * webhook's flags have), the operation commands, `dvctl console`, the help text, and the mapping of
 * every outcome to an exit code. `main.ts` only hands it the process.
 */
import { Command, CommanderError, Option } from "commander";
import { envName } from "../shared/config.js";
import { addOperationCommands } from "./commands.js";
import {
  loadKubeConfig,
  resolveEndpoint,
  settingsFrom,
  type Endpoint,
  type EndpointIo,
  type Settings,
} from "./connect.js";
import { AGENT_NAMESPACE, CA_CONFIG_MAP, DEFAULT_AGENT_SERVER_NAME } from "./agent-names.js";
import { EXIT, EXIT_CODES_HELP, exitCodeOf, messageOf } from "./errors.js";
import { formatDescribe, formatFleet, formatJson, printable } from "./format.js";
import { parsePodRef } from "./args.js";
import { defaultHistoryFile } from "./history.js";
import { execute, lsSelectorNeedsFleet, podOf, type Operation } from "./operations.js";
import { runRepl } from "./repl.js";

export interface CliIo {
  readonly stdin: NodeJS.ReadableStream & { readonly isTTY?: boolean };
  readonly stdout: NodeJS.WritableStream & { readonly isTTY?: boolean };
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
  /** How the user invoked dvctl, for the usage text: `dvctl` (default) or `kubectl dv` (the plugin). */
  readonly programName?: string;
  readonly now?: () => Date;
  /** Ctrl-C (SIGINT) and SIGTERM; returns a function that stops listening. */
  readonly onInterrupt: (fn: () => void) => () => void;
}

const DESCRIPTION =
  "Drive the dynamic-volumes agent's console: list, mount and unmount buckets in running pods.";

const DISCOVERY = `Finding the agent:
  With --agent wss://HOST:PORT, dvctl connects there and needs --token or --token-file.
  Without it, dvctl reads the kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config or in-cluster),
  looks up the node of the pod the command names (or --node), finds the agent pod on that node
  (namespace dynamic-volumes, label app.kubernetes.io/name=dynamic-volumes-agent), and reaches its
  port 9443 through an API port-forward. The certificate is checked as
  ${DEFAULT_AGENT_SERVER_NAME} (--tls-server-name) against --ca-file, or without it against the
  CA in ConfigMap ${CA_CONFIG_MAP} (namespace ${AGENT_NAMESPACE}), and the kubeconfig user's bearer
  token is sent unless --token or --token-file is given.`;

const EXAMPLES = `Examples:
  dvctl --agent wss://10.0.0.5:9443 --token-file ~/.dv-token --ca-file ca.crt ls
  dvctl mount team-a/trainer-0 datasets/imagenet --name imagenet --ro
  dvctl status team-a/trainer-0 -o json
  dvctl umount team-a/trainer-0 imagenet
  dvctl watch -n team-a
  dvctl --node worker-3 console

Prefer --token-file to --token: other users can read a process's arguments.`;

function globalOption(flags: string, description: string): Option {
  const long = /--([a-z-]+)/.exec(flags)![1]!;
  return new Option(flags, description).env(envName(long));
}

export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const now = io.now ?? (() => new Date());
  const say = (line: string): void => void io.stderr.write(`dvctl: ${printable(line)}\n`);
  let code: number = EXIT.ok;

  const name = io.programName ?? "dvctl";
  // The help speaks the name the user typed: `kubectl dv ls` when run as the kubectl plugin.
  const named = (text: string): string =>
    name === "dvctl" ? text : text.replace(/\bdvctl (?=[-a-z])/g, `${name} `);
  const program = new Command(name)
    .description(DESCRIPTION)
    .addOption(globalOption("--agent <url>", "the agent's console, wss://HOST[:PORT] (default port 9443)"))
    .addOption(globalOption("--token <token>", "bearer token for the console"))
    .addOption(globalOption("--token-file <file>", "file holding the bearer token"))
    .addOption(
      globalOption(
        "--ca-file <file>",
        `PEM CA bundle that signed the agent's certificate (default: with discovery, ConfigMap ${CA_CONFIG_MAP}; with --agent, the system CAs)`,
      ),
    )
    .addOption(
      globalOption(
        "--tls-server-name <name>",
        `name the agent's certificate must carry (with discovery: ${DEFAULT_AGENT_SERVER_NAME})`,
      ),
    )
    .addOption(
      globalOption("--insecure-skip-tls-verify", "do not verify the agent's certificate (unsafe; warns)"),
    )
    .addOption(
      globalOption("--node <node>", "without --agent: use the agent of this node (ls, watch, console)"),
    )
    .addOption(
      globalOption(
        "--kubeconfig <file>",
        "without --agent: kubeconfig file (default: KUBECONFIG, ~/.kube/config)",
      ),
    )
    .addOption(globalOption("--context <name>", "without --agent: kubeconfig context"))
    .addOption(
      globalOption("-o, --output <format>", "table or json").choices(["table", "json"]).default("table"),
    )
    .addOption(
      globalOption(
        "--request-timeout <seconds>",
        "how long to wait for ls, status and watch to answer",
      ).default("30"),
    )
    .addOption(globalOption("--debug", "print connection steps to stderr (tokens are redacted)"))
    .addOption(globalOption("-v, --verbose", "show a failed mount's FUSE client output too"))
    .addHelpText("after", named(`\n${DISCOVERY}\n\n${EXAMPLES}\n\n${EXIT_CODES_HELP}\n`))
    .showHelpAfterError(`(${name} --help shows the usage)`)
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .exitOverride();

  const settings = (): Settings => settingsFrom(program.opts());
  const endpointIo = (s: Settings): EndpointIo => ({
    debug: (line) => (s.debug ? say(`debug: ${line}`) : undefined),
    warn: say,
  });

  const once = async (op: Operation): Promise<void> => {
    const s = settings();
    // Without an agent to ask, `ls` is the fleet view: the Kubernetes API alone.
    if (op.kind === "ls" && s.agent === undefined && s.node === undefined) return fleetLs(s, op);
    if (op.kind === "ls" && op.selector !== undefined) throw lsSelectorNeedsFleet();
    const endpoint: Endpoint = await resolveEndpoint(s, podOf(op) ? { pod: podOf(op)! } : {}, endpointIo(s));
    const abort = new AbortController();
    // Only a watch ends on Ctrl-C with success; anything else keeps the default (the process ends).
    const offInterrupt = op.kind === "watch" ? io.onInterrupt(() => abort.abort()) : () => undefined;
    try {
      const client = await endpoint.connect();
      try {
        await execute(client, op, {
          stdout: io.stdout,
          stderr: io.stderr,
          output: s.output,
          now,
          signal: abort.signal,
          verbose: program.opts().verbose === true,
        });
      } finally {
        await client.close();
      }
    } finally {
      offInterrupt();
      await endpoint.close();
    }
  };

  const fleetLs = async (s: Settings, op: Extract<Operation, { kind: "ls" }>): Promise<void> => {
    const kube = await loadKubeConfig(s, endpointIo(s));
    const namespace = op.allNamespaces === true ? undefined : (op.namespace ?? kube.namespace);
    const { listFleet } = await import("./fleet.js");
    const pods = await listFleet(
      kube.core,
      {
        ...(namespace !== undefined ? { namespace } : {}),
        ...(op.selector !== undefined ? { selector: op.selector } : {}),
      },
      kube.server,
    );
    if (s.output === "json") {
      io.stdout.write(formatJson({ pods }));
      return;
    }
    const where = `${namespace !== undefined ? `in namespace ${namespace}` : "in any namespace"}${op.selector !== undefined ? ` with labels ${op.selector}` : ""}`;
    const out = formatFleet(pods, now(), where);
    if (out.table !== undefined) io.stdout.write(out.table);
    if (out.empty !== undefined) io.stderr.write(out.empty);
  };

  addOperationCommands(program, once);
  program
    .command("describe")
    .description(
      "one pod from the Kubernetes API (no agent needed): its node, mounts (STATE, AGE, MESSAGE) and the Events the agents recorded on it",
    )
    .argument("<NS/POD>", "the pod, e.g. team-a/trainer-0")
    .action(async (target: string) => {
      const ref = parsePodRef(target);
      const s = settings();
      const kube = await loadKubeConfig(s, endpointIo(s));
      const { describePod, notInjected } = await import("./fleet.js");
      const d = await describePod(kube.core, ref, kube.server);
      if (!d.injected) throw notInjected(ref);
      io.stdout.write(
        s.output === "json"
          ? formatJson({ ...d.pod, events: d.events })
          : formatDescribe(d.pod, d.events, now()),
      );
    });
  program
    .command("console")
    .description("interactive prompt on one connection, with history (~/.dvctl_history) and Tab completion")
    .action(async () => {
      const s = settings();
      const endpoint = await resolveEndpoint(s, {}, endpointIo(s));
      try {
        code = await runRepl({
          input: io.stdin,
          stdout: io.stdout,
          stderr: io.stderr,
          terminal: io.stdin.isTTY === true && io.stdout.isTTY === true,
          historyFile: defaultHistoryFile(),
          endpoint,
          output: s.output,
          now,
          onInterrupt: io.onInterrupt,
        });
      } finally {
        await endpoint.close();
      }
    });
  for (const c of program.commands)
    c.exitOverride().configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
    });

  try {
    await program.parseAsync([...argv], { from: "user" });
    return code;
  } catch (e) {
    if (e instanceof CommanderError)
      // Help and version exit 0; a missing command shows the help with exit code 1: a usage error.
      return e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.exitCode === 0
        ? EXIT.ok
        : EXIT.usage;
    say(messageOf(e));
    return exitCodeOf(e);
  }
}
