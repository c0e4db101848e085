-- Fencing the assembler: each claim takes the next attempt number, the bundle is written under a
-- key of that attempt, and only the attempt that still holds the claim may finish the request
-- (an assembler whose lease lapsed under it is refused and removes its own file).
ALTER TABLE requests ADD COLUMN assembly_attempt integer NOT NULL DEFAULT 0;
