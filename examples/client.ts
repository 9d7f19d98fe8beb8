// The seed's client.js in TypeScript: find "web@1.2.x" and fetch from it.
import { connect, hostPort } from "@seaport/seaport";
import process from "node:process";

const port = Number(process.env.SEAPORT_PORT ?? 9090);
const ports = connect(port, { secret: "beep boop" });
ports.get("web@1.2.x", async (ps) => {
  const u = `http://${hostPort(ps[0]!)}/`; // [::1]:port for IPv6 hosts
  console.log((await (await fetch(u)).text()).trim());
  await ports.close();
});
