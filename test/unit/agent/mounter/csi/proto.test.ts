/**
 * `csi.proto` against the CSI specification v1: the field numbers are the wire contract with the
 * kubelet, so each one this driver uses is pinned here, as the specification's csi.proto numbers
 * it. And the file reaches the image: tsc does not copy it, Dockerfile.agent does.
 */
import { expect } from "chai";
import * as protoLoader from "@grpc/proto-loader";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { csiProtoPath, PROTO_LOADER_OPTIONS } from "../../../../../agent/mounter/csi/server.js";

interface FieldDescriptor {
  name: string;
  number: number;
}
interface DescriptorProto {
  name: string;
  field: FieldDescriptor[];
  nestedType: DescriptorProto[];
}
interface MessageDescriptor {
  type: DescriptorProto;
}

const def = protoLoader.loadSync(csiProtoPath(), PROTO_LOADER_OPTIONS);

/** Fields by name → number; `Outer.Inner` names a nested message. */
function fieldsOf(message: string): Record<string, number> {
  const [outer, ...inner] = message.split(".");
  let d = (def[`csi.v1.${outer}`] as unknown as MessageDescriptor | undefined)?.type;
  for (const name of inner) d = d?.nestedType.find((n) => n.name === name);
  if (d === undefined) throw new Error(`no message csi.v1.${message}`);
  return Object.fromEntries(d.field.map((f) => [f.name, f.number]));
}

describe("csi.proto", () => {
  const spec: Array<[string, Record<string, number>]> = [
    ["GetPluginInfoResponse", { name: 1, vendor_version: 2, manifest: 3 }],
    ["GetPluginCapabilitiesResponse", { capabilities: 1 }],
    ["PluginCapability", { service: 1 }],
    ["ProbeResponse", { ready: 1 }],
    ["VolumeCapability", { block: 1, mount: 2, access_mode: 3 }],
    ["VolumeCapability.MountVolume", { fs_type: 1, mount_flags: 2 }],
    ["VolumeCapability.AccessMode", { mode: 1 }],
    [
      "NodePublishVolumeRequest",
      {
        volume_id: 1,
        publish_context: 2,
        staging_target_path: 3,
        target_path: 4,
        volume_capability: 5,
        readonly: 6,
        secrets: 7,
        volume_context: 8,
      },
    ],
    ["NodeUnpublishVolumeRequest", { volume_id: 1, target_path: 2 }],
    ["NodeGetCapabilitiesResponse", { capabilities: 1 }],
    ["NodeServiceCapability", { rpc: 1 }],
    ["NodeGetInfoResponse", { node_id: 1, max_volumes_per_node: 2 }],
  ];
  for (const [message, fields] of spec)
    it(`${message} has the specification's field numbers`, () => {
      expect(fieldsOf(message)).to.deep.equal(fields);
    });

  it("declares the Identity and Node calls this driver serves, in package csi.v1", () => {
    const methods = (service: string): string[] =>
      Object.keys(def[`csi.v1.${service}`] as Record<string, unknown>).sort();
    expect(methods("Identity")).to.deep.equal(["GetPluginCapabilities", "GetPluginInfo", "Probe"]);
    expect(methods("Node")).to.deep.equal([
      "NodeGetCapabilities",
      "NodeGetInfo",
      "NodePublishVolume",
      "NodeUnpublishVolume",
    ]);
  });

  it("is copied by Dockerfile.agent's build into dist, beside the compiled server, which the image copies", () => {
    const dockerfile = readFileSync(
      join(import.meta.dirname, "..", "..", "..", "..", "..", "Dockerfile.agent"),
      "utf8",
    );
    expect(dockerfile).to.match(
      /^RUN npx tsc -p tsconfig\.build\.json && cp agent\/mounter\/csi\/csi\.proto dist\/agent\/mounter\/csi\/csi\.proto /m,
    );
    expect(dockerfile).to.match(/^COPY --from=build \/src\/dist \.\/dist$/m);
  });
});
