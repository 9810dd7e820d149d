package ldap

import (
	"context"
	"fmt"
	"maps"
	"strings"

	goldap "github.com/go-ldap/ldap/v3"
)

// Markers mark units "fictive" or "blocked" (DIRECTORY-CASES #16), as
// OS2syncAD's filter does. Each is an RFC 4515 filter matched below the
// source's base_dn.
type Markers struct {
	// Fictive entries are left out, and the entries below them attach to
	// the nearest ancestor that is not fictive: their parentGUID /
	// parentEntryUUID skips it.
	Fictive string `yaml:"fictive"`
	// Blocked entries are left out together with everything below them.
	Blocked string `yaml:"blocked"`
}

func (m Markers) any() bool { return m.Fictive != "" || m.Blocked != "" }

// marks are the markers as the directory holds them now.
type marks struct {
	blocked []*goldap.DN
	// fictive maps a fictive entry's key to the key its children attach
	// to instead (nil above the naming context).
	fictive map[string]any
	// state is what the checkpoint keeps to notice a change: key (or DN
	// when the key is unreadable) → "blocked" or "fictive:<parent>".
	state map[string]string
}

// readMarks reads the entries the markers match, over c. nil when no
// markers are configured.
func (s *Source) readMarks(ctx context.Context, c *conn, rd *reader) (*marks, error) {
	mk := s.cfg.Markers
	if !mk.any() {
		return nil, nil
	}
	m := &marks{fictive: map[string]any{}, state: map[string]string{}}
	keyAttr := rd.keyAttr()
	key := func(e *goldap.Entry) string {
		raw := e.GetRawAttributeValue(keyAttr)
		if rd.ad {
			k, _ := GUIDString(raw)
			return k
		}
		return strings.ToLower(string(raw))
	}
	if mk.Blocked != "" {
		err := s.paged(ctx, c, s.cfg.BaseDN, goldap.ScopeWholeSubtree, mk.Blocked, []string{keyAttr}, nil, func(e *goldap.Entry) error {
			d, err := goldap.ParseDN(e.DN)
			if err != nil {
				return fmt.Errorf("%s: invalid DN: %w", e.DN, err)
			}
			m.blocked = append(m.blocked, d)
			id := key(e)
			if id == "" {
				id = "dn:" + strings.ToLower(dnText(d))
			}
			m.state[id] = "blocked"
			return nil
		})
		if err != nil {
			return nil, s.markerError("blocked", mk.Blocked, err)
		}
	}
	if mk.Fictive != "" {
		parent := map[string]any{}
		err := s.paged(ctx, c, s.cfg.BaseDN, goldap.ScopeWholeSubtree, mk.Fictive, []string{keyAttr, "parentGUID"}, nil, func(e *goldap.Entry) error {
			id := key(e)
			if id == "" {
				s.log.Warn("a fictive entry without a readable key is left out, but entries below it keep it as parent", "source", s.cfg.Name, "dn", e.DN)
				return nil
			}
			var p any
			if g := e.GetRawAttributeValue("parentGUID"); rd.ad && len(g) == 16 {
				p, _ = GUIDString(g)
			} else {
				var err error
				if p, err = rd.parentOf(e.DN); err != nil {
					return err
				}
			}
			parent[id] = p
			return nil
		})
		if err != nil {
			return nil, s.markerError("fictive", mk.Fictive, err)
		}
		// Resolve chains of fictive units to the first real ancestor.
		for id, p := range parent {
			for range len(parent) {
				ps, ok := p.(string)
				if !ok {
					break
				}
				next, fictive := parent[ps]
				if !fictive {
					break
				}
				p = next
			}
			m.fictive[id] = p
			m.state[id] = fmt.Sprintf("fictive:%v", p)
		}
	}
	return m, nil
}

func (s *Source) markerError(which, filter string, err error) error {
	if goldap.IsErrorAnyOf(err, goldap.LDAPResultFilterError, goldap.LDAPResultProtocolError) {
		return &permanentError{s.cfg.errorf("fix the filter (RFC 4515)", "markers.%s: the server refused filter %q: %v", which, filter, err)}
	}
	return fmt.Errorf("ldap source %q: read markers.%s: %w", s.cfg.Name, which, err)
}

// apply leaves out what the markers exclude and reattaches the children of
// fictive entries. It reports whether ent is excluded.
func (m *marks) apply(ent *entry, parentField string) bool {
	if m == nil {
		return false
	}
	if len(m.fictive) > 0 {
		if p, ok := ent.values[parentField].(string); ok {
			if eff, fictive := m.fictive[p]; fictive {
				ent.values[parentField] = eff
			}
		}
		if _, fictive := m.fictive[ent.key]; fictive && ent.key != "" {
			return true
		}
	}
	if len(m.blocked) > 0 {
		d, err := goldap.ParseDN(ent.dn)
		if err != nil {
			return false
		}
		for _, b := range m.blocked {
			if b.EqualFold(d) || b.AncestorOfFold(d) {
				return true
			}
		}
	}
	return false
}

// changed reports whether the markers differ from those stored: a unit
// was marked, unmarked, or a fictive unit's parent changed.
func (m *marks) changed(stored map[string]string) bool {
	var now map[string]string
	if m != nil {
		now = m.state
	}
	return !maps.Equal(now, stored)
}
