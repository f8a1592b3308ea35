#!/usr/bin/env python3
"""The code's shape, checked in CI: no Rust file in src/ over 800 lines, no
function over 100 lines, no macro_rules! body over 150 lines, and no import
cycle between sibling modules (doc links and tests do not count). Prints each
violation and exits 1 if there is any; run from the repository root.
"""
import os
import re
import sys

root = 'src'
bad=[]
for dp,_,fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p=os.path.join(dp,f); lines=open(p).read().split('\n')
        if len(lines)>800: bad.append(f'{p}: {len(lines)} lines')
        i=0
        while i<len(lines):
            l=lines[i]
            m=re.match(r'\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)',l) or re.match(r'\s*macro_rules!\s*(\w+)',l)
            if m and not l.strip().startswith('//'):
                # find opening brace
                depth=0; started=False; j=i
                while j<len(lines):
                    s=re.sub(r'"(\\.|[^"\\])*"','""',lines[j]); s=re.sub(r"//.*",'',s)
                    s=re.sub(r"'(\\.|[^'\\])'","''",s)
                    for c in s:
                        if c=='{': depth+=1; started=True
                        elif c=='}': depth-=1
                    if started and depth<=0: break
                    if not started and s.rstrip().endswith(';'): break
                    j+=1
                n=j-i+1
                lim=150 if 'macro_rules' in l else 100
                if started and n>lim: bad.append(f'{p}:{i+1}: {m.group(0).strip()} {n} lines')
            i+=1

# ---- import cycles between sibling modules
mods={}
for dp,_,fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p=os.path.join(dp,f)[len(root)+1:-3].split('/')
        if p[-1] in ('mod','lib','main'): p=p[:-1]
        mods[tuple(p)]=open(os.path.join(dp,f)).read()
def resolve(cur,path):
    parts=path.split('::')
    if parts[0]=='crate': base=[]; parts=parts[1:]
    elif parts[0]=='super':
        base=list(cur[:-1]); parts=parts[1:]
        while parts and parts[0]=='super': base=base[:-1]; parts=parts[1:]
    elif parts[0]=='self': base=list(cur); parts=parts[1:]
    else: return None
    # longest module prefix
    best=None
    for k in range(len(parts),-1,-1):
        cand=tuple(base+parts[:k])
        if cand in mods: best=cand; break
    return best
edges={}
for m,src in mods.items():
    src=re.sub(r"^\s*//.*$","",src,flags=re.M)
    src=re.sub(r"#\[cfg\(test\)\]\s*mod \w+ \{.*","",src,flags=re.S)
    deps=set()
    for u in re.findall(r'\b((?:crate|super|self)(?:::\w+)+)',src):
        r=resolve(m,u)
        if r and r!=m: deps.add(r)
    edges[m]=deps
# sibling-level graph: collapse each dep to the child of the common parent
g={}
for m,ds in edges.items():
    for d in ds:
        # common prefix
        k=0
        while k<min(len(m),len(d)) and m[k]==d[k]: k+=1
        if k==len(m) or k==len(d): continue  # ancestor/descendant
        a=m[:k+1]; b=d[:k+1]
        g.setdefault(a,set()).add(b)
# find cycles (SCCs)
idx={};low={};st=[];on=set();out=[];c=[0]
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in g.get(v,()):
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        if len(comp)>1: out.append(comp)
sys.setrecursionlimit(10000)
for v in list(g):
    if v not in idx: sc(v)
for comp in out: bad.append('import cycle: ' + ' <-> '.join('::'.join(x) for x in comp))

for line in bad:
    print(line)
sys.exit(1 if bad else 0)
