#!/usr/bin/env node
/**
 * The `dvctl` (and `kubectl-dv`) executable. It checks the Node version first (node-guard.ts, which
 * parses on old Node) and loads the program (run.ts) only when it may run here: a static import
 * would be linked, and could fail, before the check.
 */
import { nodeIsNewEnough } from "./node-guard.js";

if (nodeIsNewEnough()) await import("./run.js");
