// @ts-check
/**
 * Many projects watched with few sockets (the Redis benches: what matters is the number of projects a
 * gateway watches, not of clients): sockets of `roomsPerSocket` joins each, every join acknowledged.
 */
import WebSocket from 'ws';
import { CLIENT_TOKEN } from './servers.mjs';

/**
 * Opens sockets and joins every project; counts the project events they receive afterwards.
 * @param {number} port @param {string[]} guids @param {number} roomsPerSocket
 */
export async function joinAll(port, guids, roomsPerSocket) {
  const counter = { events: 0 };
  /** @type {WebSocket[]} */
  const sockets = [];
  for (let i = 0; i < guids.length; i += roomsPerSocket) {
    const mine = guids.slice(i, i + roomsPerSocket);
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?token=${CLIENT_TOKEN}`);
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    let acks = 0;
    const joined = new Promise((resolve) => {
      ws.on('message', (/** @type {Buffer} */ raw) => {
        const text = raw.toString();
        counter.events += text.split('"type":"project_message"').length - 1;
        acks += text.split('"type":"join_project"').length - 1;
        if (acks >= mine.length) resolve(null);
      });
    });
    for (const g of mine) ws.send(JSON.stringify({ type: 'join_project', id: `j-${g}`, projectGuid: g, data: {} }));
    await joined;
    sockets.push(ws);
  }
  return { counter, close: () => { for (const ws of sockets) ws.terminate(); } };
}
