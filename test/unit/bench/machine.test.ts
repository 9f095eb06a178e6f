import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { allowedCpus, parseCpuList, pinThreads } from "../../../bench/machine.js";

describe("bench/machine", () => {
  describe("parseCpuList", () => {
    it("reads single CPUs, ranges and their mix, ascending and without repeats", () => {
      expect(parseCpuList("0")).to.deep.equal([0]);
      expect(parseCpuList("0-1\n")).to.deep.equal([0, 1]);
      expect(parseCpuList("5,0-2,2")).to.deep.equal([0, 1, 2, 5]);
    });

    it("refuses what is not a CPU list", () => {
      for (const bad of ["", "a", "1-", "3-1", "0,,1", "-1"])
        expect(() => parseCpuList(bad), bad).to.throw(/not a CPU list/);
    });
  });

  it("allowedCpus of this process includes the CPU it last ran on", () => {
    const cpus = allowedCpus(process.pid);
    expect(cpus).to.be.an("array").that.is.not.empty;
    const stat = readFileSync(`/proc/${process.pid}/stat`, "utf8");
    // Field 39 ("processor"), counted from field 3, the first after the command name.
    const processor = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[36]);
    expect(cpus).to.include(processor);
  });

  describe("pinThreads", () => {
    let child: ChildProcess | undefined;
    after(() => {
      child?.kill("SIGKILL");
    });

    it("restricts another process to the CPUs given", () => {
      child = spawn("sleep", ["30"], { stdio: "ignore" });
      const pid = child.pid!;
      const all = allowedCpus(pid)!;
      const last = all[all.length - 1]!;
      pinThreads(pid, [last]);
      expect(allowedCpus(pid)).to.deep.equal([last]);
    });

    it("needs at least one CPU", () => {
      expect(() => pinThreads(process.pid, [])).to.throw(/at least one CPU/);
    });
  });
});
