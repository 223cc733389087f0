# Runs in zdtm's test directory (inside the CRIU root): every test of zdtm.desc as zdtm.py's own
# all_tests() and get_test_desc() find it, with its flavours, flags, features and arch, as JSON.
# The lazy-mode filter (noauto, nolazy, noremotelazy, flavour, arch) is applied by zdtm.mjs, the
# checks that need criu (features, .checkskip) by zdtm.py itself when it runs the test.
import json, os, stat

with open('zdtm.desc') as fd:
    desc = eval(fd.read())
files = []
for d in os.walk(desc['dir']):
    for f in d[2]:
        fp = os.path.join(d[0], f)
        st = os.lstat(fp)
        if (st.st_mode & (stat.S_IFREG | stat.S_IXUSR)) != (stat.S_IFREG | stat.S_IXUSR):
            continue
        if stat.S_IFMT(st.st_mode) in [stat.S_IFLNK, stat.S_IFSOCK]:
            continue
        files.append(fp)
excl = [os.path.join(desc['dir'], x) for x in desc['exclude']]
out = []
for t in sorted(x for x in files if not x.endswith('.checkskip') and not x.endswith('.hook') and x not in excl):
    d_path = t + '.desc'
    td = {}
    if os.access(d_path, os.F_OK) and os.path.getsize(d_path) > 0:
        with open(d_path) as fd:
            td = eval(fd.read())
    out.append({'name': t, 'flavor': td.get('flavor', 'h ns uns').split(), 'flags': td.get('flags', '').split(),
                'feature': td.get('feature', '').split(), 'arch': td.get('arch')})
print(json.dumps(out))
