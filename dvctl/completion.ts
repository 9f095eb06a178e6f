/**
 * Tab completion for `dvctl console`: command names, flags, `ns/pod` names and mount names, from
 * the last `list` the console made. Pure: the caller keeps the data fresh.
 */
import type { ListResult } from "../shared/protocol.js";

/** The words the console understands as a first word. */
export const CONSOLE_COMMANDS = ["ls", "status", "mount", "umount", "watch", "help", "quit", "exit"] as const;

const FLAGS: Readonly<Record<string, readonly string[]>> = {
  ls: ["-n", "--namespace", "-A", "--all-namespaces"],
  status: [],
  mount: ["--name", "--ro", "--replace", "--timeout"],
  umount: ["--timeout"],
  watch: ["-n", "--namespace"],
};

/** Flags that take the next word as their value. */
const VALUE_FLAGS = new Set(["-n", "--namespace", "--name", "--timeout"]);

/** Which positional arguments complete to what, per command. */
const POSITIONALS: Readonly<Record<string, readonly ("pod" | "mount")[]>> = {
  status: ["pod"],
  mount: ["pod"],
  umount: ["pod", "mount"],
  watch: ["pod"],
};

/** `ns/pod` → its mount names, from a `list` result. */
export type CompletionData = ReadonlyMap<string, readonly string[]>;

export function completionDataOf(list: ListResult): CompletionData {
  return new Map(list.pods.map((p) => [`${p.namespace}/${p.pod}`, p.mounts.map((m) => m.name)]));
}

/** readline's completer result: the candidates and the partial word they replace. */
export function complete(line: string, data: CompletionData): [string[], string] {
  const words = line.trimStart().split(/\s+/);
  const partial = words.pop() ?? "";
  const match = (candidates: Iterable<string>): [string[], string] => [
    [...new Set(candidates)].filter((c) => c.startsWith(partial)).sort(),
    partial,
  ];
  if (words.length === 0) return match(CONSOLE_COMMANDS);
  const command = words[0]!;
  const flags = FLAGS[command];
  if (flags === undefined) return [[], partial];
  const previous = words[words.length - 1];
  if (previous === "-n" || previous === "--namespace")
    return match([...data.keys()].map((k) => k.split("/")[0]!));
  if (previous !== undefined && VALUE_FLAGS.has(previous)) return [[], partial];
  if (partial.startsWith("-")) return match(flags);
  const positionals: string[] = [];
  for (let i = 1; i < words.length; i++) {
    const w = words[i]!;
    if (VALUE_FLAGS.has(w)) i++;
    else if (!w.startsWith("-")) positionals.push(w);
  }
  switch (POSITIONALS[command]?.[positionals.length]) {
    case "pod":
      return match(data.keys());
    case "mount":
      return match(data.get(positionals[0] ?? "") ?? []);
    default:
      return [[], partial];
  }
}
