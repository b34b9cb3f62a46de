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
var wgMuLocked = map[string]bool{"addWGLocked": true, "removeWGLocked": true}

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
	// chain[f] is how f reaches a blocking call ("" if it does not).
	chain := map[string]string{}
	var visit func(f string, seen map[string]bool) string
	visit = func(f string, seen map[string]bool) string {
		if c, ok := chain[f]; ok {
			return c
		}
		if seen[f] || f == "signDocLocked" {
			return ""
		}
		seen[f] = true
		out := ""
		for _, g := range calls[f] {
			if blockingCalls[g] {
				out = f + " -> " + g
				break
			}
			if _, ok := calls[g]; ok {
				if c := visit(g, seen); c != "" {
					out = f + " -> " + c
					break
				}
			}
		}
		chain[f] = out
		return out
	}
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
