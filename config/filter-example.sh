#!/bin/sh
#
# filter-example.sh -- an example emailrelay --filter script
#
# Usage:  emailrelay --as-server --filter /path/to/filter-example.sh ...
#
# emailrelay runs the filter once for each message it receives, after the
# client has sent the whole message and before it answers.  Like
# E-MailRelay, it gives the filter two arguments:
#
#   $1  the content file (the message as received, CRLF lines, with the
#       Received: line emailrelay added at the top)
#   $2  the envelope file (<id>.envelope.new: sender, recipients, ...)
#
# The filter runs with PATH=/usr/bin:/bin, no other environment, stdin and
# stderr on /dev/null, and is killed after --filter-timeout seconds.  It may
# edit either file.  What it means by its exit code:
#
#   0        accept: the message is stored (and forwarded)
#   1-99     reject: the first "<<...>>" line it prints is the SMTP reply
#            text (a leading 4xx/5xx code is the reply code; else 452),
#            the second is the reason that goes to the log
#   100      the filter has taken the message (moved or deleted its
#            files): reply 250 but store nothing (files left in place are
#            stored all the same)
#   103      accept, and start forwarding now
#
# This one refuses mail that an earlier spam checker marked with
# "X-Spam-Flag: YES", and mail from the domains listed below.

blocked_domains="spam.example junk.example"

content="$1"
envelope="$2"

# The sender, from the envelope's X-MailRelay-From line (the envelope is
# CRLF text).
from=`sed -n 's/^X-MailRelay-From: *//p' "$envelope" | tr -d '\r'`

for domain in $blocked_domains ; do
	case "$from" in
		*@"$domain")
			echo "<<550 5.7.1 sender not accepted>>"
			echo "<<blocked sender [$from]>>"
			exit 1
			;;
	esac
done

# Only the header counts: stop at the first empty line.
if tr -d '\r' < "$content" | sed '/^$/q' | grep -qi '^X-Spam-Flag: *YES' ; then
	echo "<<550 5.7.1 message refused as spam>>"
	echo "<<spam flag set, sender [$from]>>"
	exit 1
fi

exit 0
