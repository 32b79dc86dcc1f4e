"""Renders Velocity templates with the `airspeed` engine (pip install airspeed)
to give common/src/vtl/airspeed.json its expected outputs.

Run: python3 tests/scripts/vtl_oracle.py > /tmp/cases.json, then keep the
cases whose output does not depend on Python's own methods or printing
(airspeed maps method calls onto Python objects: `toUpperCase`, `True`).
"""
import airspeed, json
cases = [
 ("set-if", "#set($a = 1)\n#if($a == 1)yes#else no#end", {}),
 ("foreach-hasnext", "[#foreach($x in $items){\"n\": \"$x.name\"}#if($foreach.hasNext),#end#end]", {"items":[{"name":"a"},{"name":"b"},{"name":"c"}]}),
 ("string-methods", "$s.length() $s.toUpperCase() $s.contains('b') $s.replace('a','x') $s.substring(1,3) $s.indexOf('c') $s.startsWith('ab') $s.endsWith('z')", {"s":"abcabc"}),
 ("absent", "[$nothing] [$!nothing] [${nothing}] [$!{nothing}]", {}),
 ("arithmetic", "#set($n = 7)#set($m = $n + 1)#set($d = $n / 2)#set($r = $n % 3)$m $d $r", {}),
 ("logic", "#set($a = true)#set($b = false)#if($a && !$b)one#end #if($a || $b)two#end #if(!$a)three#elseif($b)four#{else}five#end", {}),
 ("range", "#foreach($i in [1..4])$i,#end", {}),
 ("velocity-count", "#foreach($x in ['a','b'])$velocityCount:$x #end", {}),
 ("interpolation", "#set($name = \"Ann\")#set($greeting = \"Hello $name!\")$greeting", {}),
 ("gobble", "#set($a = 1)\n{\n  #if($a == 1)\n  \"one\": true\n  #end\n}\n", {}),
 ("gobble-foreach", "[\n#foreach($x in $items)\n  \"$x\"#if($foreach.hasNext),#end\n#end\n]", {"items":["a","b"]}),
 ("comparison", "#if(2 > 1)gt#end #if('a' == 'a')eq#end #if(1 != 2)ne#end #if(3 >= 3)ge#end", {}),
 ("comments", "a## line comment\nb#* block\ncomment *#c", {}),
 ("nested-props", "$a.b.c / $a.b.missing / $!a.b.missing", {"a":{"b":{"c":"deep"}}}),
 ("list-methods", "$l.size() $l.get(1) $l.contains('y') $l.isEmpty()", {"l":["x","y","z"]}),
 ("map-methods", "$m.get('k') $m.containsKey('k') $m.size() $m.k", {"m":{"k":"v"}}),
 ("escapes", "\\$notref \\#set", {}),
]
out = []
for name, template, ctx in cases:
    try:
        rendered = airspeed.Template(template).merge(ctx)
    except Exception as e:
        rendered = "ERROR: " + str(e)
    out.append({"name": name, "template": template, "context": ctx, "airspeed": rendered})
print(json.dumps(out, indent=1))
