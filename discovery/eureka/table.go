package eureka

import (
	"fmt"
	"maps"
	"strings"
)

// table is the source's copy of one server's registry: instances by
// application name (upper case, as Eureka keeps them) and instance id.
// Only the Run goroutine holds one.
type table map[string]map[string]instance

// appName is the application an instance belongs to, upper case.
func appName(app *application, in *instance) string {
	if in.App != "" {
		return strings.ToUpper(in.App)
	}
	return strings.ToUpper(app.Name)
}

// newTable builds the table of a full fetch. Instances without any id are
// left out (and so show as a hash mismatch on the next delta).
func newTable(apps *applications) table {
	t := table{}
	for i := range apps.Application {
		a := &apps.Application[i]
		for j := range a.Instance {
			in := a.Instance[j]
			id := in.ID()
			if id == "" {
				continue
			}
			in.ActionType = ""
			name := appName(a, &in)
			if t[name] == nil {
				t[name] = map[string]instance{}
			}
			t[name][id] = in
		}
	}
	return t
}

// apply returns the table with a delta applied, as the Netflix client's
// updateDelta does: ADDED and MODIFIED put the instance (replacing one of
// the same id), DELETED removes it, and an application left without
// instances goes. The receiver is not modified. changed reports whether
// the delta held any instance.
func (t table) apply(delta *applications) (next table, changed bool, err error) {
	next = make(table, len(t))
	for name, ins := range t {
		next[name] = ins // copied below before a write
	}
	copied := map[string]bool{}
	// own returns the application's instances, copied before the first
	// write; an application a DELETED emptied (and dropped) earlier in
	// the same delta starts again empty.
	own := func(name string) map[string]instance {
		m := next[name]
		if !copied[name] {
			m, copied[name] = maps.Clone(m), true
		}
		if m == nil {
			m = map[string]instance{}
		}
		next[name] = m
		return m
	}
	for i := range delta.Application {
		a := &delta.Application[i]
		for j := range a.Instance {
			in := a.Instance[j]
			id := in.ID()
			if id == "" {
				continue
			}
			name := appName(a, &in)
			action := in.ActionType
			in.ActionType = ""
			switch action {
			case actionAdded, actionModified:
				own(name)[id] = in
			case actionDeleted:
				if _, ok := next[name][id]; ok {
					delete(own(name), id)
					if len(next[name]) == 0 {
						delete(next, name)
					}
				}
			default:
				return t, false, fmt.Errorf("%w: instance %s/%s has actionType %q (want ADDED, MODIFIED or DELETED)",
					ErrMalformed, name, id, action)
			}
			changed = true
		}
	}
	return next, changed, nil
}

// hash is the table's appsHashCode.
func (t table) hash() string {
	statuses := map[string]int{}
	for _, ins := range t {
		for _, in := range ins {
			statuses[in.status()]++
		}
	}
	return reconcileHash(statuses)
}
