// The agents' opening handshake on real sockets (no root needed): a pre-shared key proven both
// ways, and every way it can fail ends in a clear code, on both sides.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { AgentType, encodeAgentMessage } from '../src/protocol/agent.js';
import { AgentChannel } from '../src/transport/agent-channel.js';

const key = { keyId: 'rack', key: randomBytes(32) };

describe('the agents\' handshake', () => {
  let server: Server;
  let port = 0;
  let accept: (s: Socket) => void = () => {};
  before(async () => {
    server = createServer((s) => accept(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    port = (server.address() as { port: number }).port;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  /** One client/agent pair: the agent side accepts with `keys`, the client opens with `clientKey`. */
  async function pair(keys: typeof key[], clientKey: typeof key | undefined) {
    const accepted = new Promise<AgentChannel>((resolve, reject) => (accept = (s) => AgentChannel.accept(s, 'agent-b', keys, 2000).then(resolve, reject)));
    accepted.catch(() => {});
    const socket = connect(port, '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    const opened = AgentChannel.open(socket, 'agent-a', clientKey, 2000);
    opened.catch(() => {});
    return { accepted, opened };
  }

  it('with the same key on both sides: both open, each knows the other\'s name, and messages flow', async () => {
    const { accepted, opened } = await pair([key], key);
    const [agent, client] = await Promise.all([accepted, opened]);
    assert.equal(agent.peer, 'agent-a');
    assert.equal(client.peer, 'agent-b');
    client.send({ type: AgentType.PING });
    await agent.next([AgentType.PING], 2000);
    agent.send({ type: AgentType.PONG });
    await client.next([AgentType.PONG], 2000);
    client.close();
    agent.close();
  });

  it('a wait abandoned on a failure takes no message, and a later wait gets it at once', async () => {
    const { accepted, opened } = await pair([key], key);
    const [agent, client] = await Promise.all([accepted, opened]);
    let fail!: (e: Error) => void;
    const failure = new Promise<never>((_, reject) => (fail = reject));
    const waiting = agent.next([AgentType.PING], 5000, failure);
    const t0 = Date.now();
    fail(Object.assign(new Error('the migration failed elsewhere'), { code: 'ERR_CRIU' }));
    await assert.rejects(waiting, { code: 'ERR_CRIU' });
    assert.ok(Date.now() - t0 < 1000, 'at once, not at its deadline');
    client.send({ type: AgentType.PONG });
    const m = await agent.next([AgentType.PONG], 2000);
    assert.equal(m.type, AgentType.PONG, 'the abandoned wait did not take it');
    client.close();
    agent.close();
  });

  it('a wrong key: ERR_AUTH on the client (the agent cannot prove the client\'s key), and on the agent', async () => {
    const { accepted, opened } = await pair([key], { keyId: 'rack', key: randomBytes(32) });
    await assert.rejects(opened, { code: 'ERR_AUTH' });
    await assert.rejects(accepted, (e: { code?: string }) => e.code === 'ERR_AUTH' || e.code === 'ERR_PEER_CLOSED');
  });

  it('a key id the agent does not hold: ERR_AUTH', async () => {
    const { accepted, opened } = await pair([key], { keyId: 'other', key: key.key });
    await assert.rejects(accepted, { code: 'ERR_AUTH' });
    await assert.rejects(opened, { code: 'ERR_AUTH' });
  });

  it('no key where the agent asks for one: ERR_AUTH on both sides', async () => {
    const { accepted, opened } = await pair([key], undefined);
    await assert.rejects(accepted, { code: 'ERR_AUTH' });
    await assert.rejects(opened, { code: 'ERR_AUTH' });
  });

  it('another protocol version: ERR_VERSION', async () => {
    const accepted = new Promise<AgentChannel>((resolve, reject) => (accept = (s) => AgentChannel.accept(s, 'agent-b', [], 2000).then(resolve, reject)));
    const socket = connect(port, '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    socket.write(encodeAgentMessage({ type: AgentType.HELLO, version: 99, agent: 'future' }));
    await assert.rejects(accepted, { code: 'ERR_VERSION' });
    socket.destroy();
  });

  it('bytes that are no agent frame, and a message of the wrong type: ERR_PROTOCOL, and the connection ends', async () => {
    const garbage = new Promise<AgentChannel>((resolve, reject) => (accept = (s) => AgentChannel.accept(s, 'agent-b', [], 2000).then(resolve, reject)));
    const s1 = connect(port, '127.0.0.1');
    await new Promise((r) => s1.once('connect', r));
    s1.write(Buffer.from([0, 0, 0, 0, 1]));
    await assert.rejects(garbage, { code: 'ERR_PROTOCOL' });
    s1.destroy();
    const wrong = new Promise<AgentChannel>((resolve, reject) => (accept = (s) => AgentChannel.accept(s, 'agent-b', [], 2000).then(resolve, reject)));
    const s2 = connect(port, '127.0.0.1');
    await new Promise((r) => s2.once('connect', r));
    s2.write(encodeAgentMessage({ type: AgentType.COMMIT }));
    await assert.rejects(wrong, { code: 'ERR_PROTOCOL' });
    s2.destroy();
  });

  it('a client that says nothing: ERR_TIMEOUT, bounded', async () => {
    const silent = new Promise<AgentChannel>((resolve, reject) => (accept = (s) => AgentChannel.accept(s, 'agent-b', [], 300).then(resolve, reject)));
    const s = connect(port, '127.0.0.1');
    const t0 = Date.now();
    await assert.rejects(silent, { code: 'ERR_TIMEOUT' });
    assert.ok(Date.now() - t0 < 2000);
    s.destroy();
  });

  it('an ERROR from the peer carries its code', async () => {
    const { accepted, opened } = await pair([key], key);
    const [agent, client] = await Promise.all([accepted, opened]);
    agent.fail('ERR_CRIU', 'criu restore failed');
    await assert.rejects(client.next([AgentType.RESTORED], 2000), (e: { code?: string; message?: string }) => e.code === 'ERR_CRIU' && /agent-b: criu restore failed/.test(e.message ?? ''));
    client.close();
  });
});
