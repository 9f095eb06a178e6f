/**
 * The `inject` command (`npm run --silent inject -- --signing-key-file K [--root R] pod.yaml`): reads
 * a plain pod manifest (a file, or `-` for standard input), injects it with the webhook's mutation
 * ({@link injectPod}) and prints the pod as JSON (or YAML with `-o yaml`) for local mode's pods
 * directory. Errors are one line on stderr and exit 1; a usage error exits 2.
 */
import { readFileSync, statSync } from "node:fs";
import { dump as dumpYaml } from "js-yaml";
import { isAppError } from "../shared/errors.js";
import { DEFAULT_MOUNT_PATH, DEFAULT_ROOT } from "../shared/names.js";
import { mintPodId, signingKeyFromText, signingKeyObject } from "../shared/signing.js";
import { injectPod, parseManifest } from "./inject.js";
import { PSA_WARNING, VOLUME_MODES, normalizeMountPath, type VolumeMode } from "./mutate.js";

export const INJECT_USAGE = `Usage: npm run --silent inject -- --signing-key-file FILE [--root DIR] [--default-mount-path PATH] [--volume-mode hostPath|csi] [-o json|yaml] POD.yaml|-

Turns a plain pod manifest (YAML or JSON, one Pod) into the pod the dynamic-volumes webhook would
admit: a signed id, the hostPath volume under <root>/pods and the mount in every container (or those
named by dynamic-volumes/containers). Write the output to local mode's pods directory:

  npm run --silent inject -- --signing-key-file key --root /var/lib/dynamic-volumes pod.yaml > pods/my.json

  --signing-key-file FILE   the id-signing key the agent is given (at least 16 bytes); not needed with csi
  --root DIR                the agent's and mounter's --root [default ${DEFAULT_ROOT}]
  --default-mount-path PATH mount path without the dynamic-volumes/mount-path annotation [default ${DEFAULT_MOUNT_PATH}]
  --volume-mode MODE        hostPath, or csi: the CSI volume instead, and a metadata.uid when the pod has none [default hostPath]
  -o, --output json|yaml    output format [default json]
`;

export interface InjectIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** Reads a file, or standard input for "-". */
  readonly readFile?: (path: string) => string;
  readonly mintId?: () => string;
}

class UsageError extends Error {}

interface Args {
  keyFile: string | undefined;
  volumeMode: VolumeMode;
  root: string;
  defaultMountPath: string;
  output: "json" | "yaml";
  manifest: string;
}

function parseArgs(argv: readonly string[]): Args | "help" {
  const a: Partial<Args> = {
    root: DEFAULT_ROOT,
    defaultMountPath: DEFAULT_MOUNT_PATH,
    volumeMode: "hostPath",
    output: "json",
  };
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "-h" || arg === "--help") return "help";
    const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const value = (): string => {
      if (eq > 0) return arg.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case "--signing-key-file":
        a.keyFile = value();
        break;
      case "--root":
        a.root = value();
        break;
      case "--default-mount-path":
        a.defaultMountPath = value();
        break;
      case "--volume-mode": {
        const v = value();
        const mode = VOLUME_MODES.find((m) => m === v);
        if (mode === undefined) throw new UsageError(`${flag} is ${VOLUME_MODES.join(" or ")}, not "${v}"`);
        a.volumeMode = mode;
        break;
      }
      case "-o":
      case "--output": {
        const v = value();
        if (v !== "json" && v !== "yaml") throw new UsageError(`${flag} is json or yaml, not "${v}"`);
        a.output = v;
        break;
      }
      default:
        if (arg.startsWith("-") && arg !== "-") throw new UsageError(`unknown flag ${arg}`);
        positional.push(arg);
    }
  }
  if (a.keyFile === undefined && a.volumeMode === "hostPath")
    throw new UsageError("--signing-key-file is required (in hostPath mode)");
  if (positional.length !== 1)
    throw new UsageError(
      positional.length === 0
        ? "give the pod manifest's file (or - for standard input)"
        : "give one pod manifest",
    );
  if (!a.root!.startsWith("/") || a.root!.length < 2)
    throw new UsageError(`--root must be an absolute directory, not "${a.root}"`);
  a.root = a.root!.replace(/\/+$/, "");
  const mp = normalizeMountPath(a.defaultMountPath!);
  if ("error" in mp) throw new UsageError(`--default-mount-path ${mp.error}`);
  a.defaultMountPath = mp.path;
  a.manifest = positional[0]!;
  return a as Args;
}

/** Reads the key as the agent does (trimmed, at least 16 bytes); a plain Error says what to do. */
function readKey(path: string, stderr: (text: string) => void): Uint8Array {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(
      code === "ENOENT"
        ? `signing key file ${path} does not exist; create one (mode 0600) with: (umask 077; head -c 32 /dev/urandom | base64 > ${path})`
        : `cannot read the signing key file ${path}: ${code ?? String(e)}`,
    );
  }
  const key = signingKeyFromText(text);
  if (key.length < 16)
    throw new Error(
      `the signing key in ${path} is ${key.length} bytes; use at least 16 random bytes (head -c 32 /dev/urandom | base64 > ${path})`,
    );
  try {
    if ((statSync(path).mode & 0o077) !== 0)
      stderr(`inject: warning: ${path} can be read by other users; chmod 600 ${path}\n`);
  } catch {
    // Read a moment ago; a race is not worth an error.
  }
  return key;
}

/** Runs the command; returns the exit code. */
export function runInjectCli(argv: readonly string[], io: InjectIo): number {
  let args: Args | "help";
  try {
    args = parseArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    io.stderr(`inject: ${e.message}\n\n${INJECT_USAGE}`);
    return 2;
  }
  if (args === "help") {
    io.stdout(INJECT_USAGE);
    return 0;
  }
  try {
    const key = args.keyFile === undefined ? undefined : readKey(args.keyFile, io.stderr);
    const source = args.manifest === "-" ? "standard input" : args.manifest;
    let text: string;
    try {
      text = (io.readFile ?? ((p) => readFileSync(p === "-" ? 0 : p, "utf8")))(args.manifest);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new Error(
        code === "ENOENT" ? `${source} does not exist` : `cannot read ${source}: ${code ?? String(e)}`,
      );
    }
    const result = injectPod(
      parseManifest(text, source),
      {
        signingKey: key === undefined ? undefined : signingKeyObject(key),
        volumeMode: args.volumeMode,
        root: args.root,
        defaultMountPath: args.defaultMountPath,
        mintId: io.mintId ?? mintPodId,
      },
      source,
    );
    // Pod Security Admission does not run in local mode: its warning would only mislead.
    for (const w of result.warnings) if (w !== PSA_WARNING) io.stderr(`inject: warning: ${w}\n`);
    if (result.kind !== "patched") io.stderr(`inject: ${source} is written unchanged: ${result.reason}\n`);
    io.stdout(args.output === "yaml" ? dumpYaml(result.pod) : `${JSON.stringify(result.pod, null, 2)}\n`);
    return 0;
  } catch (e) {
    io.stderr(`inject: ${isAppError(e) || e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
