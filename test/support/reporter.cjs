// Mocha's spec reporter, followed by a plain "N passed, N failed, N skipped" closing line that
// CI systems which do not know mocha can read.
"use strict";
const Mocha = require("mocha");

class SpecWithSummary extends Mocha.reporters.Spec {
  epilogue() {
    super.epilogue();
    const s = this.stats;
    process.stdout.write(`tests: ${s.passes} passed, ${s.failures} failed, ${s.pending} skipped\n`);
  }
}

module.exports = SpecWithSummary;
