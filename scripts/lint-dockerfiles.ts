/**
 * Lints the Dockerfiles with dockerfile-utils (the validator behind the VS Code Docker extension),
 * every check raised to an error: hadolint, the usual linter, is in neither Debian nor the npm
 * registry. Run by `npm run lint`; exits 1 and prints `file:line: message` for each problem.
 */
import { readFileSync } from "node:fs";
import { ValidationSeverity, validate } from "dockerfile-utils";

export const DOCKERFILES = ["Dockerfile.webhook", "Dockerfile.agent"] as const;

const E = ValidationSeverity.ERROR;
/** Every configurable check at error severity; the rest (syntax, arguments, flags) always report. */
const SETTINGS = {
  deprecatedMaintainer: E,
  directiveCasing: E,
  emptyContinuationLine: E,
  instructionCasing: E,
  instructionCmdMultiple: E,
  instructionEntrypointMultiple: E,
  instructionHealthcheckMultiple: E,
  instructionJSONInSingleQuotes: E,
  instructionWorkdirRelative: E,
};

/** The problems in one Dockerfile's text, as `line: message` (1-based lines). */
export function lintDockerfile(text: string): string[] {
  return validate(text, SETTINGS).map((d) => {
    const message = typeof d.message === "string" ? d.message : d.message.value;
    return `${d.range.start.line + 1}: ${message}`;
  });
}

function main(): number {
  let problems = 0;
  for (const file of DOCKERFILES) {
    for (const p of lintDockerfile(readFileSync(file, "utf8"))) {
      process.stderr.write(`${file}:${p}\n`);
      problems++;
    }
  }
  if (problems > 0) process.stderr.write(`${problems} problem(s) in the Dockerfiles\n`);
  return problems > 0 ? 1 : 0;
}

if (import.meta.url === `file://${process.argv[1]}`) process.exitCode = main();
