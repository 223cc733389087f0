// Which criu and runc a migration uses (the host's, or the managed root), and what doctor says of
// CRIU and INET sockets: pure decisions, checked on the answers a host could give.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { chooseTools, inetNote, MANAGED_ROOT } from '../src/criu/root.js';

const good = { criuVersion: '4.1.1', criuCheck: 'Looks good.', runcVersion: '1.1.15' };

describe('the host\'s criu and runc, or the managed root', () => {
  it('uses the host\'s tools only when criu >= 4.0 passes its check and runc >= 1.1 is there', () => {
    assert.equal(chooseTools(good, undefined).root, '/');
    assert.equal(chooseTools({ ...good, criuVersion: '4.2.1', runcVersion: '1.2.5' }, undefined).root, '/');
    const cases: [Partial<typeof good> & Record<string, unknown>, RegExp][] = [
      [{ criuVersion: null }, /no criu/],
      [{ criuVersion: '3.17.1' }, /3\.17\.1 is older than 4\.0/],
      [{ criuCheck: 'Error (criu/kerndat.c:1): vDSO' }, /criu check.*fails here/],
      [{ criuCheck: null }, /criu check.*no answer/],
      [{ runcVersion: null }, /no runc/],
      [{ runcVersion: '1.0.3' }, /1\.0\.3 is older than 1\.1/],
    ];
    for (const [change, why] of cases) {
      const c = chooseTools({ ...good, ...change } as typeof good, undefined);
      assert.equal(c.root, MANAGED_ROOT, JSON.stringify(change));
      assert.match(c.reason, why);
    }
  });

  it('takes POSTCOPY_CRIU_ROOT as it is, whatever the host has', () => {
    assert.deepEqual(chooseTools(good, '/srv/root'), { root: '/srv/root', reason: 'POSTCOPY_CRIU_ROOT says so' });
  });

  it('says that CRIU before 4.2 cannot dump INET sockets on kernels 6.16 and newer, and nothing otherwise', () => {
    assert.match(inetNote('6.18.44-fc', '4.1.1')!, /needs 4\.2.*forky and sid have 4\.2\.1/);
    assert.match(inetNote('6.16.0', null)!, /criu \?/);
    assert.equal(inetNote('6.15.9', '4.1.1'), null);
    assert.equal(inetNote('6.18.0', '4.2.1'), null);
    assert.equal(inetNote('7.0.1', '5.0'), null);
    assert.equal(inetNote('weird', '4.1'), null);
  });
});
