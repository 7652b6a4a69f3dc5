import pkg from 'node-sql-parser';
const { Parser } = pkg;
const p = new Parser();
for (const [db, sql] of [
 ['postgresql', 'UPDATE "acct" a SET balance = balance - $1, note = $2 WHERE id = $3 AND x IN (1,2)'],
 ['postgresql', 'DELETE FROM s.acct WHERE id > 3'],
 ['postgresql', "INSERT INTO acct (id, balance) VALUES (1, 2.5), ($1, $2)"],
 ['mysql', 'UPDATE `acct` SET balance = balance - ? WHERE id = ? ORDER BY id LIMIT 1'],
 ['mysql', 'INSERT INTO acct (id, balance) VALUES (?, ?) '],
 ['mysql', 'UPDATE a, b SET a.x = b.x WHERE a.id=b.id'],
 ['mysql', 'CREATE TABLE x (id int)'],
]) {
  try {
    const ast = p.astify(sql, { database: db });
    const a = Array.isArray(ast) ? ast[0] : ast;
    console.log(db, a.type, JSON.stringify(a.table), JSON.stringify(a.from)?.slice(0,200));
    if (a.where) console.log('  where:', p.sqlify({type:'select', columns:[{expr:{type:'column_ref', table:null, column:'*'}}], from:[{table:'t'}], where:a.where}, {database: db}));
    if (a.where) console.log('  where expr:', p.exprToSQL ? 'has exprToSQL' : 'no');
  } catch (e) { console.log(db, 'ERR', e.message.slice(0,100)); }
}
console.log(Object.keys(pkg));
