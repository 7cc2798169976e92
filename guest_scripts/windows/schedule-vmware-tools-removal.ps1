# guestprep-script: schedule-vmware-tools-removal
# guestprep-output: json
# Installs a first-boot task that removes VMware Tools only once the guest runs on
# KVM (its installer refuses to run off ESXi, and removing it earlier breaks the
# VMware drivers the guest still uses). Nothing is uninstalled now.
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
# the product code ends up in the task's command line: accept nothing but a GUID
if ([string]$p.product_code -notmatch '^\{[0-9A-Fa-f-]{36}\}$') { throw ('not an MSI product code: ' + [string]$p.product_code) }
Initialize-GuestprepDir
$script = Join-Path -Path $GuestprepDir -ChildPath 'remove-vmware-tools.ps1'
[System.IO.File]::WriteAllText($script, [string]$p.removal_script, (New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false))
$task = [string]$p.task
if (-not (Test-GuestprepTask -Name $task)) {
    Add-JournalEntry -Operation 'windows.vmware_tools_removal' -Kind 'task_create' -Target $task -Detail @{ script = $script; product_code = [string]$p.product_code }
    # the product code is the script's one positional argument (a GUID, checked above)
    New-GuestprepStartupTask -Name $task -Script $script -ScriptArgs @([string]$p.product_code)
}
Update-GuestprepState -Key 'vmware_tools_removal' -Value ([ordered]@{ task = $task; product_code = [string]$p.product_code })
Write-Result -Value ([ordered]@{ ok = $true; steps = @([ordered]@{ task = $task }) })
