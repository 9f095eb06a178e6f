/**
 * `dvctl console`: an interactive prompt on one console connection. The commands are those of the
 * command line (commands.ts), parsed by the same commander definitions; `help`, `quit` and `exit`
 * are the console's own. History is kept in `~/.dvctl_history` (interactive sessions only), and Tab
 * completes commands, flags, `ns/pod` names and mount names from a `list` refreshed as you go.
 *
 * Ctrl-C stops a running `watch` (or stops waiting for a mount), clears a line being typed, and
 * leaves the console on an empty line. Tab on an ambiguous word lists the candidates at once.
 * The exit status is that of the last command, as a shell's is.
 */
import { Command, CommanderError } from "commander";
import { createInterface, type Interface } from "node:readline";
import { splitWords, type OutputFormat } from "./args.js";
import type { DvctlClient } from "./client.js";
import { addOperationCommands } from "./commands.js";
import { complete, completionDataOf, type CompletionData } from "./completion.js";
import type { Endpoint } from "./connect.js";
import { EXIT, exitCodeOf, messageOf } from "./errors.js";
import { printable } from "./format.js";
import { DEFAULT_HISTORY_SIZE, loadHistory, saveHistory } from "./history.js";
import { execute, type Operation } from "./operations.js";

export interface ReplOptions {
  readonly input: NodeJS.ReadableStream;
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  /** A terminal gets a prompt, line editing, completion and history. */
  readonly terminal: boolean;
  /** Where history is kept when `terminal`; none when undefined. */
  readonly historyFile?: string;
  readonly historySize?: number;
  readonly endpoint: Endpoint;
  readonly output: OutputFormat;
  readonly now: () => Date;
  /** Ctrl-C outside a terminal (a signal): returns a function that stops listening. */
  readonly onInterrupt?: (fn: () => void) => () => void;
  /** How old the completion data may get before Tab refreshes it, in ms. Default 5 s. */
  readonly completionMaxAgeMs?: number;
}

const HELP = `Commands (as on the command line, without the global flags):
  ls [-n NS | -A]                             pods on this node and their mounts
  status NS/POD                               one pod's mounts
  mount NS/POD BUCKET[/PREFIX] [--name N] [--ro] [--replace] [--timeout S]
  umount NS/POD NAME [--timeout S]
  watch [-n NS] [POD]                         state changes until Ctrl-C
  help                                        this text
  quit, exit                                  leave (Ctrl-D too)
Tab completes commands, flags, NS/POD and mount names.
`;

/** Parses one line with the command line's own definitions; undefined for an empty line. */
function parseLine(words: string[], stderr: NodeJS.WritableStream): Promise<Operation | undefined> {
  let op: Operation | undefined;
  const program = new Command("dvctl")
    .exitOverride()
    .configureOutput({ writeOut: (s) => stderr.write(s), writeErr: (s) => stderr.write(s) })
    .showSuggestionAfterError(true);
  addOperationCommands(program, async (o) => {
    op = o;
  });
  for (const c of program.commands) c.exitOverride().configureOutput(program.configureOutput());
  return program.parseAsync(words, { from: "user" }).then(() => op);
}

export async function runRepl(o: ReplOptions): Promise<number> {
  let client: DvctlClient | undefined = await o.endpoint.connect();
  let data: CompletionData = new Map();
  let dataAt = 0;
  let status: number = EXIT.ok;
  let running: { readonly abort: AbortController; readonly kind: Operation["kind"] } | undefined;
  let inputEnded = false;

  const ensureClient = async (): Promise<DvctlClient> => {
    if (client === undefined || client.closed !== undefined) client = await o.endpoint.connect();
    return client;
  };
  const refresh = async (): Promise<void> => {
    try {
      data = completionDataOf(await (await ensureClient()).request({ op: "list" }));
      dataAt = Date.now();
    } catch {
      // Completion works from older data, or none; the next command reports the connection.
    }
  };
  await refresh();

  const history = o.terminal && o.historyFile !== undefined ? loadHistory(o.historyFile, o.historySize) : [];
  const rl: Interface = createInterface({
    input: o.input,
    output: o.stdout,
    terminal: o.terminal,
    prompt: "dvctl> ",
    history,
    historySize: o.historySize ?? DEFAULT_HISTORY_SIZE,
    removeHistoryDuplicates: true,
    completer: (line: string, done: (err: Error | null, result: [string[], string]) => void) => {
      const answer = (): void => {
        const [candidates, partial] = complete(line, data);
        // Ambiguous, with nothing in common to add: show the candidates on the first Tab (readline
        // would wait for a second one), and leave the line as it is.
        if (o.terminal && candidates.length > 1 && commonPrefix(candidates) === partial) {
          done(null, [[], partial]);
          o.stdout.write(`\r\n${candidates.join("  ")}\r\n`);
          rl.prompt(true);
          return;
        }
        done(null, [candidates, partial]);
      };
      if (Date.now() - dataAt > (o.completionMaxAgeMs ?? 5000)) refresh().then(answer, answer);
      else answer();
    },
  });
  if (o.terminal && o.historyFile !== undefined) {
    const file = o.historyFile;
    rl.on("history", (h: string[]) => saveHistory(file, h, o.historySize));
  }
  const interrupt = (): void => {
    if (running !== undefined) running.abort.abort();
    else if (o.terminal && rl.line !== "") clearLine();
    else rl.close();
  };
  // Ctrl-C on a line being typed drops it, as a shell does: "^C", and a fresh prompt below.
  const clearLine = (): void => {
    const editor = rl as unknown as { line: string; cursor: number };
    editor.line = "";
    editor.cursor = 0;
    o.stdout.write("^C\r\n");
    rl.prompt();
  };
  rl.on("SIGINT", interrupt);
  const offInterrupt = o.terminal ? () => undefined : (o.onInterrupt?.(interrupt) ?? (() => undefined));
  // The end of the input ends a watch (a piped session has no Ctrl-C); lines read before it still run.
  rl.on("close", () => {
    inputEnded = true;
    if (running?.kind === "watch") running.abort.abort();
  });

  if (o.terminal) {
    o.stdout.write(`Connected. Type help for the commands, Tab to complete.\n`);
    rl.prompt();
  }
  try {
    for await (const line of rl) {
      let words: string[];
      try {
        words = splitWords(line);
      } catch (e) {
        o.stderr.write(`error: ${printable(messageOf(e))}\n`);
        status = exitCodeOf(e);
        if (o.terminal) rl.prompt();
        continue;
      }
      const first = words[0];
      if (first === "quit" || first === "exit") break;
      if (first === "help" || first === "?") o.stdout.write(HELP);
      else if (first !== undefined) status = await runLine(words);
      if (o.terminal) rl.prompt();
    }
  } finally {
    offInterrupt();
    rl.close();
    await client?.close();
  }
  return status;

  async function runLine(words: string[]): Promise<number> {
    try {
      const op = await parseLine(words, o.stderr);
      if (op === undefined) return EXIT.ok;
      running = { abort: new AbortController(), kind: op.kind };
      if (op.kind === "watch" && inputEnded) running.abort.abort();
      // A watch gets its own connection: the protocol has no way to end one watch but to hang up.
      const own = op.kind === "watch" ? await o.endpoint.connect() : undefined;
      try {
        await execute(own ?? (await ensureClient()), op, {
          stdout: o.stdout,
          stderr: o.stderr,
          output: o.output,
          now: o.now,
          signal: running.abort.signal,
        });
      } finally {
        await own?.close();
      }
      if (op.kind === "mount" || op.kind === "umount") await refresh();
      return EXIT.ok;
    } catch (e) {
      if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
      o.stderr.write(`error: ${printable(messageOf(e))}\n`);
      return exitCodeOf(e);
    } finally {
      running = undefined;
    }
  }
}

/** The longest prefix every candidate shares. */
function commonPrefix(words: readonly string[]): string {
  let prefix = words[0] ?? "";
  for (const w of words) while (!w.startsWith(prefix)) prefix = prefix.slice(0, -1);
  return prefix;
}
