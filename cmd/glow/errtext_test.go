package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"testing"
)

// TestNoErrorTextMatching: the CLI branches on the API's error codes
// (errors.Is(err, api.ErrNoSuchPeer)), never on an error's text: a
// strings function or a comparison applied to err.Error() is refused.
// Printing err.Error() is fine.
func TestNoErrorTextMatching(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files here: %v", err)
	}
	fset := token.NewFileSet()
	found := 0
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok {
					if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "strings" {
						for _, a := range n.Args {
							if isErrorText(a) {
								found++
								t.Errorf("%s: strings.%s on an error's text; branch on its api code (errors.Is) instead", fset.Position(n.Pos()), sel.Sel.Name)
							}
						}
					}
				}
			case *ast.BinaryExpr:
				if (n.Op == token.EQL || n.Op == token.NEQ) && (isErrorText(n.X) || isErrorText(n.Y)) {
					found++
					t.Errorf("%s: an error's text compared with %s; branch on its api code (errors.Is) instead", fset.Position(n.Pos()), n.Op)
				}
			}
			return true
		})
	}
	t.Logf("%d places match on error text", found)
}

// isErrorText reports whether e is a call x.Error() with no arguments.
func isErrorText(e ast.Expr) bool {
	c, ok := e.(*ast.CallExpr)
	if !ok || len(c.Args) != 0 {
		return false
	}
	sel, ok := c.Fun.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "Error"
}
