import { test } from "node:test";
import assert from "node:assert/strict";
import { parseProcNetTcp } from "../transport.ts";

const TABLE = [
  "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
  "   0: 0100007F:2710 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 15164129 1",
  "   1: 0100007F:9a7f 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 14422058 1",
  "  12: 00000000000000000000000001000000:FFFF 00000000000000000000000000000000:0000 0A 00000000:00000000",
  "",
].join("\n");

test("parseProcNetTcp reads the local port of every line of a TCP table", () => {
  const ports = new Set<number>();
  assert.equal(parseProcNetTcp(TABLE, ports), true);
  assert.deepEqual([...ports].sort((a, b) => a - b), [10000, 0x9a7f, 0xffff]);
});

test("parseProcNetTcp refuses text that is not a TCP table", () => {
  const ports = new Set<number>();
  assert.equal(parseProcNetTcp("", ports), false);
  assert.equal(parseProcNetTcp("Name: foo\n   0: 0100007F:2710", ports), false);
  assert.equal(ports.size, 0);
});
