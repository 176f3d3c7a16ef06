"""`shadowtap replay`: recorded requests sent again, now, to any configured candidate.

The recorded exchanges hold the requests and the production answers; a replay re-sends the
requests to a candidate exactly as live shadowing would (`call`), paced and budgeted
(`pacing`), scores each answer against the recorded primary answer with the configured
scorers, and stores it in the same tables marked `source = 'replay'` (`store`), so
`shadowtap report` shows the candidate beside the live ones. Which requests, and why others
are not sent, is `source`; the loop is `run`; what the user sees is `progress`.
"""
