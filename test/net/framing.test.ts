// net/framing.ts: DNS over TCP's 2-byte length framing, both directions.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { frame, FrameReader } from '../../src/net/framing.js';

function reader(keep = Infinity): { r: FrameReader; got: string[] } {
  const got: string[] = [];
  const r = new FrameReader((msg) => {
    got.push(msg.toString('latin1'));
    return got.length < keep;
  });
  return { r, got };
}

describe('TCP framing', () => {
  it('frame() prefixes the length', () => {
    assert.equal(frame(Buffer.from('abc')).toString('hex'), '0003616263');
    assert.equal(frame(Buffer.alloc(0)).toString('hex'), '0000');
  });

  it('reads several frames from one chunk and one frame from many chunks', () => {
    const { r, got } = reader();
    const stream = Buffer.concat([frame(Buffer.from('one')), frame(Buffer.from('two')), frame(Buffer.from('three'))]);
    r.push(stream.subarray(0, 9));
    assert.deepEqual(got, ['one']);
    assert.ok(r.partial);
    for (let i = 9; i < stream.length; i++) r.push(stream.subarray(i, i + 1));
    assert.deepEqual(got, ['one', 'two', 'three']);
    assert.ok(!r.partial);
  });

  it('a length byte split across chunks, and empty frames', () => {
    const { r, got } = reader();
    const stream = Buffer.concat([frame(Buffer.alloc(0)), frame(Buffer.alloc(300, 0x61))]);
    r.push(stream.subarray(0, 3));
    r.push(stream.subarray(3));
    assert.deepEqual(got.map((g) => g.length), [0, 300]);
  });

  it('stops reading a chunk when the handler says so', () => {
    const { r, got } = reader(1);
    r.push(Buffer.concat([frame(Buffer.from('a')), frame(Buffer.from('b'))]));
    assert.deepEqual(got, ['a']);
    assert.ok(!r.partial);
  });

  it('a frame handed on is not changed by later chunks', () => {
    const kept: Buffer[] = [];
    const r = new FrameReader((msg) => (kept.push(msg), true));
    const stream = Buffer.concat([frame(Buffer.from('first')), frame(Buffer.from('second'))]);
    r.push(stream.subarray(0, 10));
    r.push(stream.subarray(10));
    assert.deepEqual(kept.map((k) => k.toString()), ['first', 'second']);
  });
});
