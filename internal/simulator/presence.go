package simulator

import (
	"fmt"
	"slices"
)

// Base presence status option values of the msdyn_basepresencestatus column
// of Dataverse's msdyn_presence table. Every presence, out-of-box or custom,
// maps to exactly one of them.
const (
	BaseAvailable = 192360000
	BaseBusy      = 192360001
	BaseBusyDND   = 192360002
	BaseAway      = 192360003
	BaseOffline   = 192360004
	// BaseInactive is the base status of the system's Inactive presence.
	BaseInactive = 192360005
)

// IDs of the five out-of-box presences, identical in every organisation.
const (
	PresenceAvailable = "f523f628-c07a-e811-8162-000d3aa11f50"
	PresenceBusy      = "efdeb843-c07a-e811-8162-000d3aa11f50"
	PresenceBusyDND   = "08971864-c07a-e811-8162-000d3aa11f50"
	PresenceAway      = "3dacae76-c07a-e811-8162-000d3aa11f50"
	PresenceOffline   = "70139190-c07a-e811-8162-000d3aa11f50"
)

// Presence is one row of the msdyn_presence table.
type Presence struct {
	// ID is msdyn_presenceid, a lower-case GUID.
	ID string
	// Name is msdyn_name, the display name the presence API returns as
	// CurrentPresenceStatusInfo.
	Name string
	// BaseStatus is msdyn_basepresencestatus, one of BaseAvailable to
	// BaseOffline.
	BaseStatus int
}

// BaseStatusName returns the display name of a base presence status option
// value ("Available", "Busy", "Busy - DND", "Away", "Offline"), or "" for a
// value that is not one.
func BaseStatusName(v int) string {
	switch v {
	case BaseAvailable:
		return "Available"
	case BaseBusy:
		return "Busy"
	case BaseBusyDND:
		return "Busy - DND"
	case BaseAway:
		return "Away"
	case BaseOffline:
		return "Offline"
	case BaseInactive:
		return "Inactive"
	}
	return ""
}

// OutOfBoxPresences returns the five presences every organisation has, in
// base status order.
func OutOfBoxPresences() []Presence {
	return []Presence{
		{ID: PresenceAvailable, Name: "Available", BaseStatus: BaseAvailable},
		{ID: PresenceBusy, Name: "Busy", BaseStatus: BaseBusy},
		{ID: PresenceBusyDND, Name: "Busy - DND", BaseStatus: BaseBusyDND},
		{ID: PresenceAway, Name: "Away", BaseStatus: BaseAway},
		{ID: PresenceOffline, Name: "Offline", BaseStatus: BaseOffline},
	}
}

// PresenceInactive is the ID of the simulated organisation's Inactive
// presence. Unlike the five above, its ID is the organisation's own.
const PresenceInactive = "1b5e2a7c-9d4f-ef11-8409-6045bd0a1b0f"

// InactivePresence returns the presence the system sets when an agent
// misses notifications (Options.Inactive).
func InactivePresence() Presence {
	return Presence{ID: PresenceInactive, Name: "Inactive", BaseStatus: BaseInactive}
}

// DefaultCustomPresences returns the custom presences the simulated
// organisation has unless Options.CustomPresences says otherwise. Their IDs
// are fixed so tests and demos can name them.
func DefaultCustomPresences() []Presence {
	return []Presence{
		{ID: "4c0e2b1a-7f3d-ef11-8409-6045bd0a1b01", Name: "In a meeting", BaseStatus: BaseAway},
		{ID: "4c0e2b1a-7f3d-ef11-8409-6045bd0a1b02", Name: "Lunch", BaseStatus: BaseAway},
		{ID: "4c0e2b1a-7f3d-ef11-8409-6045bd0a1b03", Name: "Training", BaseStatus: BaseBusy},
		{ID: "4c0e2b1a-7f3d-ef11-8409-6045bd0a1b04", Name: "Wrap-up", BaseStatus: BaseBusy},
		{ID: "4c0e2b1a-7f3d-ef11-8409-6045bd0a1b05", Name: "Coaching", BaseStatus: BaseBusyDND},
	}
}

// validate checks a presence as Dataverse would accept it and returns it
// with its ID in canonical form.
func (p Presence) validate() (Presence, error) {
	id, ok := parseGUID(p.ID)
	if !ok {
		return p, fmt.Errorf("presence %q: ID %q is not a GUID", p.Name, p.ID)
	}
	p.ID = id
	if p.Name == "" {
		return p, fmt.Errorf("presence %s: empty name", p.ID)
	}
	if BaseStatusName(p.BaseStatus) == "" {
		return p, fmt.Errorf("presence %q: base status %d is not one of %d to %d", p.Name, p.BaseStatus, BaseAvailable, BaseInactive)
	}
	return p, nil
}

// catalogue is the organisation's msdyn_presence table, in insertion order.
// It is guarded by the Simulator's model lock.
type catalogue struct {
	list []Presence
}

func newCatalogue(custom []Presence) (*catalogue, error) {
	c := &catalogue{list: OutOfBoxPresences()}
	for _, p := range custom {
		if err := c.add(p); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *catalogue) add(p Presence) error {
	p, err := p.validate()
	if err != nil {
		return err
	}
	if _, ok := c.get(p.ID); ok {
		return fmt.Errorf("presence %s (%q) already exists", p.ID, p.Name)
	}
	c.list = append(c.list, p)
	return nil
}

func (c *catalogue) remove(id string) error {
	id, ok := parseGUID(id)
	if !ok {
		return fmt.Errorf("remove presence: %q is not a GUID", id)
	}
	for _, p := range OutOfBoxPresences() {
		if p.ID == id {
			return fmt.Errorf("remove presence %s: out-of-box presences cannot be removed", id)
		}
	}
	i := slices.IndexFunc(c.list, func(p Presence) bool { return p.ID == id })
	if i < 0 {
		return fmt.Errorf("remove presence %s: no such presence", id)
	}
	c.list = slices.Delete(c.list, i, i+1)
	return nil
}

func (c *catalogue) get(id string) (Presence, bool) {
	for _, p := range c.list {
		if p.ID == id {
			return p, true
		}
	}
	return Presence{}, false
}
