/**
 * What dvctl prints: aligned tables in the style of kubectl (STATE and AGE columns, ages as kubectl
 * shows them), one-line summaries of mount results, progress and watch events, and JSON.
 *
 * Pure: the current time comes in as an argument. Every string from the agent passes through
 * {@link printable}, because mount errors quote FUSE clients' stderr, and a terminal must not obey
 * escape sequences hidden in it.
 */
import type { FleetEvent, FleetMount, FleetPod } from "./fleet.js";
import type {
  ListResult,
  MountResult,
  MountSummary,
  PodSummary,
  ProgressFrame,
  StateEvent,
  UnmountResult,
} from "../shared/protocol.js";

/** Replaces control characters (terminal escapes included) except tab and newline with "?". */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, "?");
}

/** One table cell: printable, on one line. */
function cell(text: string): string {
  return printable(text).replace(/[\t\n]+/g, " ");
}

/**
 * The age of a state entered at `since` (ISO 8601), as kubectl prints it (`45s`, `3m10s`, `5h`,
 * `2d3h`...): `k8s.io/apimachinery/pkg/util/duration.HumanDuration`. `-` without a time, `<invalid>`
 * for a time more than a second in the future, `<unknown>` when `since` does not parse.
 */
export function formatAge(since: string | undefined, now: Date): string {
  if (since === undefined || since === "") return "-";
  const t = Date.parse(since);
  if (Number.isNaN(t)) return "<unknown>";
  const seconds = Math.floor((now.getTime() - t) / 1000);
  if (seconds < -1) return "<invalid>";
  if (seconds < 0) return "0s";
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) return seconds % 60 === 0 ? `${minutes}m` : `${minutes}m${seconds % 60}s`;
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) return minutes % 60 === 0 ? `${hours}h` : `${hours}h${minutes % 60}m`;
  if (hours < 48) return `${hours}h`;
  const days = Math.floor(hours / 24);
  if (hours < 24 * 8) return hours % 24 === 0 ? `${days}d` : `${days}d${hours % 24}h`;
  if (hours < 24 * 365 * 2) return `${days}d`;
  const years = Math.floor(days / 365);
  if (hours < 24 * 365 * 8) return days % 365 === 0 ? `${years}y` : `${years}y${days % 365}d`;
  return `${years}y`;
}

/** Column widths for `rows` under `headers`. */
export function columnWidths(headers: readonly string[], rows: readonly (readonly string[])[]): number[] {
  return headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
}

/** One row padded to `widths`, three spaces apart as kubectl does, without trailing blanks. */
export function formatRow(cells: readonly string[], widths: readonly number[]): string {
  return cells
    .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
    .join("   ")
    .trimEnd();
}

/** An aligned table; a column whose every row is empty (MESSAGE, usually) is left out. */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const keep = headers.map((_, i) => i < headers.length - 1 || rows.some((r) => (r[i] ?? "") !== ""));
  const pick = <T>(xs: readonly T[]): T[] => xs.filter((_, i) => keep[i]);
  const h = pick(headers);
  const body = rows.map((r) => pick(r.map(cell)));
  const widths = columnWidths(h, body);
  return [h, ...body].map((r) => formatRow(r, widths)).join("\n") + "\n";
}

/** `bucket` or `bucket/prefix`. */
export function sourceOf(m: { bucket?: string; prefix?: string }): string {
  return m.prefix ? `${m.bucket ?? "?"}/${m.prefix}` : (m.bucket ?? "?");
}

function accessOf(readOnly: boolean | undefined): string {
  return readOnly === undefined ? "" : readOnly ? "ro" : "rw";
}

export const LIST_HEADERS = ["NAMESPACE", "POD", "NAME", "STATE", "SOURCE", "ACCESS", "AGE", "MESSAGE"];

function mountCells(m: MountSummary, now: Date): string[] {
  return [m.name, m.state, sourceOf(m), accessOf(m.readOnly), formatAge(m.since, now), m.error ?? ""];
}

/** The rows of `ls`: one per mount; a pod without mounts gets one row of dashes. */
export function listRows(list: ListResult, now: Date): string[][] {
  const rows: string[][] = [];
  for (const p of list.pods) {
    if (p.mounts.length === 0) rows.push([p.namespace, p.pod, "-", "-", "-", "-", "-", p.problem ?? ""]);
    for (const m of p.mounts) {
      const cells = mountCells(m, now);
      if (p.problem !== undefined && cells[5] === "") cells[5] = p.problem;
      rows.push([p.namespace, p.pod, ...cells]);
    }
  }
  return rows;
}

/** `ls` as a table, or the line to show (on stderr) when this node serves no such pod. */
export function formatList(list: ListResult, now: Date): { table?: string; empty?: string } {
  if (list.pods.length === 0)
    return { empty: `No pods with a dynamic-volumes volume on node ${cell(list.node)}.\n` };
  return { table: formatTable(LIST_HEADERS, listRows(list, now)) };
}

/** `status NS/POD`: a short header, then its mounts. */
export function formatStatus(p: PodSummary, now: Date): string {
  const head = [
    `Pod:         ${cell(p.namespace)}/${cell(p.pod)}`,
    `Node:        ${cell(p.node)}`,
    `Mount path:  ${cell(p.mountPath)}`,
    ...(p.problem !== undefined ? [`Problem:     ${cell(p.problem)}`] : []),
  ].join("\n");
  if (p.mounts.length === 0) return `${head}\nMounts:      <none>\n`;
  const rows = p.mounts.map((m) => {
    const [name, state, source, access, age, message] = mountCells(m, now);
    return [name!, state!, source!, access!, m.path, age!, message!];
  });
  return `${head}\n\n${formatTable(["NAME", "STATE", "SOURCE", "ACCESS", "PATH", "AGE", "MESSAGE"], rows)}`;
}

/**
 * A failed mount's error as a user reads it: its first line (the cause and the fix) and the line
 * that says how to remove the entry; the FUSE client's own output in between only when `verbose`.
 */
export function failureText(error: string, verbose: boolean): string {
  const lines = error
    .split("\n")
    .map((l) => printable(l).trimEnd())
    .filter((l) => l !== "");
  if (verbose || lines.length <= 1) return lines.join("\n  ");
  const remedy = lines.slice(1).filter((l) => l.includes("dvctl umount"));
  const hidden = lines.length - 1 - remedy.length;
  return [lines[0], ...remedy, ...(hidden > 0 ? ["(-v shows the client's output)"] : [])].join("\n  ");
}

/** The outcome of `mount`: one line, or for a failure its cause and fix (see {@link failureText}). */
export function formatMountResult(r: MountResult, verbose = false): string {
  const m = r.mount;
  const what = `${cell(r.namespace)}/${cell(r.pod)}: ${cell(m.name)}`;
  if (m.state === "failed") return `${what} failed: ${failureText(m.error ?? "no reason given", verbose)}\n`;
  return `${what} ${m.state} at ${cell(m.path)} (${cell(sourceOf(m))}, ${accessOf(m.readOnly)})\n`;
}

export function formatUnmountResult(r: UnmountResult): string {
  return `${cell(r.namespace)}/${cell(r.pod)}: ${cell(r.name)} ${r.state}\n`;
}

/** A progress frame of an in-flight mount or unmount, for stderr. */
export function formatProgress(pod: string, p: ProgressFrame["progress"]): string {
  const detail = p.bucket !== undefined ? ` (${cell(sourceOf(p))}, ${accessOf(p.readOnly)})` : "";
  // A failure's reason comes once, with the result; a progress line only says the state.
  const error = p.error !== undefined && p.state !== "failed" ? `: ${cell(p.error)}` : "";
  return `${cell(pod)} ${cell(p.name)}: ${cell(p.state)}${detail}${error}\n`;
}

/** A watch event as a row of the `ls` table (AGE 0s: it just changed), padded to `widths`. */
export function eventRow(e: StateEvent): string[] {
  return [
    e.namespace,
    e.pod,
    e.name,
    e.state,
    e.bucket !== undefined ? sourceOf(e) : "-",
    accessOf(e.readOnly) || "-",
    "0s",
    e.error ?? "",
  ].map(cell);
}

/**
 * Room the watch table leaves in each column from the start (NAMESPACE, POD, NAME, STATE, SOURCE,
 * ACCESS, AGE), so that rows streamed later fit under the header: a watch often starts with few
 * or no rows, and the names that come later are longer.
 */
const WATCH_MIN_WIDTHS = [16, 24, 16, 10, 24, 6, 5, 0];

/**
 * Streams `watch` as kubectl does: the snapshot as a table, then one row per event, under the same
 * columns. A row too wide for them is never cut: the columns widen, and the header is printed
 * again above it, so that every row lines up with the header above it.
 */
export class WatchTable {
  private widths: number[];

  constructor(snapshot: ListResult, now: Date) {
    const rows = listRows(snapshot, now).map((r) => r.map(cell));
    this.widths = columnWidths(LIST_HEADERS, rows).map((w, i) => Math.max(w, WATCH_MIN_WIDTHS[i] ?? 0));
    this.header = formatRow(LIST_HEADERS, this.widths) + "\n";
    this.snapshotRows = rows.map((r) => formatRow(r, this.widths) + "\n").join("");
  }

  readonly header: string;
  readonly snapshotRows: string;

  /** The event's row; preceded by the header again when its columns had to widen. */
  row(e: StateEvent): string {
    const cells = eventRow(e);
    // The last column (MESSAGE) is not padded: it never pushes anything.
    const wider = this.widths.map((w, i) =>
      i < cells.length - 1 ? Math.max(w, (cells[i] ?? "").length) : w,
    );
    const widened = wider.some((w, i) => w !== this.widths[i]);
    this.widths = wider;
    return (
      (widened ? formatRow(LIST_HEADERS, this.widths) + "\n" : "") + formatRow(cells, this.widths) + "\n"
    );
  }
}

/** `-o json`: the agent's result as it came, indented. */
export function formatJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** `-o json` for streams (`watch`): one compact JSON document per line. */
export function formatJsonLine(value: unknown): string {
  return `${JSON.stringify(value)}\n`;
}

/** The columns of the fleet view (`ls` without an agent): the node, and no mount path. */
export const FLEET_HEADERS = [
  "NAMESPACE",
  "POD",
  "NODE",
  "NAME",
  "STATE",
  "SOURCE",
  "ACCESS",
  "AGE",
  "MESSAGE",
];

function fleetMountCells(m: FleetMount, now: Date): string[] {
  return [
    m.name,
    m.state,
    m.bucket !== undefined ? sourceOf(m) : "-",
    accessOf(m.readOnly) || "-",
    formatAge(m.since, now),
    m.error ?? "",
  ];
}

/** One row per mount; an injected pod without mounts gets a row of dashes. */
export function fleetRows(pods: readonly FleetPod[], now: Date): string[][] {
  const rows: string[][] = [];
  for (const p of pods) {
    const head = [p.namespace, p.pod, p.node ?? "<none>"];
    if (p.mounts.length === 0) rows.push([...head, "-", "-", "-", "-", "-", p.problem ?? ""]);
    for (const m of p.mounts) rows.push([...head, ...fleetMountCells(m, now)]);
  }
  return rows;
}

/** The fleet view as a table, or the line to show (on stderr) when no pod matched. */
export function formatFleet(
  pods: readonly FleetPod[],
  now: Date,
  where: string,
): { table?: string; empty?: string } {
  if (pods.length === 0) return { empty: `No pods with a dynamic-volumes volume ${cell(where)}.\n` };
  return { table: formatTable(FLEET_HEADERS, fleetRows(pods, now)) };
}

/** `describe NS/POD`: the pod, its mounts, and the Events the agents recorded on it. */
export function formatDescribe(p: FleetPod, events: readonly FleetEvent[], now: Date): string {
  const head = [
    `Pod:         ${cell(p.namespace)}/${cell(p.pod)}`,
    `Node:        ${cell(p.node ?? "<none> (not scheduled)")}`,
    ...(p.phase !== undefined ? [`Phase:       ${cell(p.phase)}`] : []),
    `Mount path:  ${cell(p.mountPath)}`,
    ...(p.problem !== undefined ? [`Problem:     ${cell(p.problem)}`] : []),
  ].join("\n");
  const mounts =
    p.mounts.length === 0
      ? "Mounts:      <none>\n"
      : `Mounts:\n${indent(
          formatTable(
            ["NAME", "STATE", "SOURCE", "ACCESS", "PATH", "AGE", "MESSAGE"],
            p.mounts.map((m) => {
              const [name, state, source, access, age, message] = fleetMountCells(m, now);
              return [name!, state!, source!, access!, `${p.mountPath}/${m.name}`, age!, message!];
            }),
          ),
        )}`;
  const evs =
    events.length === 0
      ? "Events:      <none>\n"
      : `Events:\n${indent(
          formatTable(
            ["LAST SEEN", "TYPE", "REASON", "FROM", "MESSAGE"],
            events.map((e) => [
              formatAge(e.lastSeen, now) + (e.count > 1 ? ` (x${e.count})` : ""),
              e.type,
              e.reason,
              e.from ?? "",
              e.message,
            ]),
          ),
        )}`;
  return `${head}\n${mounts}${evs}`;
}

function indent(block: string): string {
  return block
    .split("\n")
    .map((l) => (l === "" ? l : `  ${l}`))
    .join("\n");
}
