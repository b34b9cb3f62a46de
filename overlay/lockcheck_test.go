package overlay

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// blockingCalls are the calls that wait for the disk, the kernel, another
// lock held long or the whole heap; none may be made with Node.mu held
// (Node.mu's comment).
var blockingCalls = map[string]bool{
	"WriteFile": true, "writeAtomic": true, "CreateKeyFile": true, "SaveRecords": true, "Sync": true,
	"SetRoutes": true, "Refresh": true, "IpcSet": true, "IpcGet": true, "ipcSet": true,
	"GC": true, "FreeOSMemory": true,
}

// wgMuLocked run with Bind.wgMu held, which serialises IpcSet: they may
// block (lazywg.go), and are blocking calls to their callers.
var wgMuLocked = map[string]bool{"addWGLocked": true, "removeWGLocked": true, "removeKeyLocked": true}

// lockedBlocking parses the package's Go files in dir (tests aside) and
// returns (with package member's, dir/member), for each function named ...Locked (it runs with a mutex held:
// STYLE.md habit 6) that reaches a blocking call through the package's own
// functions, one chain that shows it ("aLocked -> b -> WriteFile").
// Functions are matched by name, so a call to any method of that name is
// followed, on the receiver (n.x, n.bind.x, b.x) only; closures are not
// followed (they may run elsewhere). The exception written at Node.mu, the invites file saved when a
// code is redeemed (n.invites.Save), and the control loop's friend list
// change in the same step (signDocLocked), are not followed.
func lockedBlocking(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	// The node's state files are written by package member (State,
	// OrderedWriter, Invites): its functions are followed too.
	memberFiles, err := filepath.Glob(filepath.Join(dir, "member", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, memberFiles...)
	fset := token.NewFileSet()
	calls := map[string][]string{} // function name -> names it calls
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(fset, f, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			name := fd.Name.Name
			recv := "n"
			if fd.Recv != nil && len(fd.Recv.List) > 0 && len(fd.Recv.List[0].Names) > 0 {
				recv = fd.Recv.List[0].Names[0].Name
			}
			if _, ok := calls[name]; !ok {
				calls[name] = nil // declared
			}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				switch n.(type) {
				case *ast.FuncLit, *ast.GoStmt:
					return false // runs elsewhere: a closure may be queued, a go statement is another goroutine
				}
				c, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				switch fn := c.Fun.(type) {
				case *ast.Ident:
					calls[name] = append(calls[name], fn.Name)
				case *ast.SelectorExpr:
					if x, ok := fn.X.(*ast.SelectorExpr); ok && fn.Sel.Name == "Save" && x.Sel.Name == "invites" {
						return true // n.invites.Save: the exception
					}
					if blockingCalls[fn.Sel.Name] || rootIdent(fn.X) == recv {
						calls[name] = append(calls[name], fn.Sel.Name)
					} // else a local value's method or another package's function: not followed
				}
				return true
			})
		}
	}
	// visit(f) is how f reaches a blocking call ("" if it does not).
	visit := callChains(calls, func(f string) bool { return f == "signDocLocked" }, func(g string) string {
		if blockingCalls[g] {
			return g
		}
		return ""
	})
	var found []string
	for f := range calls {
		if strings.HasSuffix(f, "Locked") && !wgMuLocked[f] {
			if c := visit(f, map[string]bool{}); c != "" {
				found = append(found, c)
			}
		}
	}
	sort.Strings(found)
	return slices.Compact(found)
}

// TestNoBlockingCallInLocked keeps what TestStateWritesOutsideLock checks at
// run time true of code no test runs: no function named ...Locked reaches
// a file write, netlink, a multicast join, IpcSet or a collection.
func TestNoBlockingCallInLocked(t *testing.T) {
	dir := "."
	if d := os.Getenv("GLOW_LOCKCHECK_DIR"); d != "" {
		dir = d // to run it on another tree
	}
	found := lockedBlocking(t, dir)
	for _, c := range found {
		t.Errorf("blocking call with a mutex held: %s", c)
	}
	t.Logf("%d ...Locked functions reach a blocking call", len(found))
}

// rootIdent is the name at the root of a selector chain (n in n.bind.dev).
func rootIdent(e ast.Expr) string {
	for {
		switch x := e.(type) {
		case *ast.Ident:
			return x.Name
		case *ast.SelectorExpr:
			e = x.X
		default:
			return ""
		}
	}
}

// TestLockOrder keeps the lock order written at Node.saveMu: saveMu, then
// mu, then the leaf locks, never the other way. Functions named ...Locked
// run with Node.mu held: none may reach (through the package's functions
// and the methods it calls on its own receiver, n.f()) a Lock of Node.mu, which would
// deadlock, or of Node.saveMu, which comes before it. And no function may
// take saveMu between its own mu.Lock and mu.Unlock.
func TestLockOrder(t *testing.T) {
	dir := "."
	if d := os.Getenv("GLOW_LOCKCHECK_DIR"); d != "" {
		dir = d
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	calls := map[string][]string{} // function name -> names it calls, "Node.mu" and "Node.saveMu" for its Locks of them
	locked := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			name := fd.Name.Name
			recv, onNode := "", false
			if fd.Recv != nil && len(fd.Recv.List) > 0 {
				if len(fd.Recv.List[0].Names) > 0 {
					recv = fd.Recv.List[0].Names[0].Name
				}
				if s, ok := fd.Recv.List[0].Type.(*ast.StarExpr); ok {
					id, _ := s.X.(*ast.Ident)
					onNode = id != nil && id.Name == "Node"
				}
			}
			if _, ok := calls[name]; !ok {
				calls[name] = nil
			}
			held := false // lexically between n.mu.Lock() and n.mu.Unlock()
			ast.Inspect(fd.Body, func(x ast.Node) bool {
				switch x.(type) {
				case *ast.FuncLit, *ast.GoStmt, *ast.DeferStmt:
					return false // runs elsewhere or at the end
				}
				c, ok := x.(*ast.CallExpr)
				if !ok {
					return true
				}
				switch fn := c.Fun.(type) {
				case *ast.Ident:
					calls[name] = append(calls[name], fn.Name)
				case *ast.SelectorExpr:
					if m, ok := fn.X.(*ast.SelectorExpr); ok && onNode && rootIdent(m.X) == recv && (m.Sel.Name == "mu" || m.Sel.Name == "saveMu") {
						lock := "Node." + m.Sel.Name
						switch fn.Sel.Name {
						case "Lock":
							calls[name] = append(calls[name], lock)
							if lock == "Node.saveMu" && held {
								t.Errorf("%s: takes Node.saveMu with Node.mu held (%v)", name, fset.Position(c.Pos()))
							}
							if lock == "Node.mu" {
								held = true
								locked++
							}
						case "Unlock":
							if lock == "Node.mu" {
								held = false
							}
						}
						return true
					}
					if x, ok := fn.X.(*ast.Ident); ok && x.Name == recv {
						calls[name] = append(calls[name], fn.Sel.Name) // recv.f(): a method of the same value
					}
				}
				return true
			})
		}
	}
	// visit(f) is how f reaches a Lock of Node.mu or Node.saveMu ("" if not).
	visit := callChains(calls, func(string) bool { return false }, func(g string) string {
		if g == "Node.mu" || g == "Node.saveMu" {
			return g + ".Lock"
		}
		return ""
	})
	checked := 0
	for f := range calls {
		if strings.HasSuffix(f, "Locked") {
			checked++
			if c := visit(f, map[string]bool{}); c != "" {
				t.Errorf("a lock taken with Node.mu held: %s", c)
			}
		}
	}
	if checked == 0 || locked == 0 {
		t.Fatalf("found %d ...Locked functions and %d Locks of Node.mu: the check sees nothing", checked, locked)
	}
	t.Logf("%d ...Locked functions take neither Node.mu nor Node.saveMu; %d Locks of Node.mu", checked, locked)
}

// callChains returns a walk of the call graph calls (function -> what it
// calls): visit(f, seen) is the first chain "f -> ... -> target" by which f
// reaches a callee that hit names (hit returns the chain's last step), or
// "" if none; functions that skip accepts end the walk. Results are
// remembered across calls.
func callChains(calls map[string][]string, skip func(string) bool, hit func(string) string) func(f string, seen map[string]bool) string {
	memo := map[string]string{}
	var visit func(f string, seen map[string]bool) string
	visit = func(f string, seen map[string]bool) string {
		if c, ok := memo[f]; ok {
			return c
		}
		if seen[f] || skip(f) {
			return ""
		}
		seen[f] = true
		out := ""
		for _, g := range calls[f] {
			if h := hit(g); h != "" {
				out = f + " -> " + h
				break
			}
			if _, ok := calls[g]; ok {
				if c := visit(g, seen); c != "" {
					out = f + " -> " + c
					break
				}
			}
		}
		memo[f] = out
		return out
	}
	return visit
}
